"""The console, output_dir/run.log, and the libraries' chatter.

The console. Our lines are "[HH:MM:SS] message" on stdout, written through tqdm.write so a live bar is
lifted out of the way and redrawn below them. Errors go to stderr. quiet_libraries() routes what paddle,
paddlenlp, jieba, datasets and Python's warnings print into this log: warnings as WARNING lines, the rest at
debug level (hidden unless PADDLE_FINETUNE_DEBUG=1). Temporary checkpoint paths (.tmp-checkpoint-<step>-<pid>)
are rewritten to the final ones in every line.

run.log. Every console line of ours (not bar redraws) is also kept for output_dir/run.log: buffered in
memory until attach_run_log(output_dir), which the engine calls once output_dir may be written, then
appended line by line. A run refused before that writes nothing. The buffer and the file belong to the
current run (runtime.state), which closes the file when it ends; a traceback goes to run.log through the
run's exit (training.session), never through sys.excepthook.

Imports: the standard library; tqdm inside _emit; of the project `runtime.state` and `runtime.distributed`.
"""
import contextlib
import logging
import os
import pprint
import re
import sys
import time
import warnings

from paddle_finetune.runtime import state
from paddle_finetune.runtime.distributed import get_rank, is_main_process

DEBUG_ENV = "PADDLE_FINETUNE_DEBUG"  # "1": library chatter shown (and kept in run.log) as DEBUG lines

RUN_LOG = "run.log"

_TEMP_CHECKPOINT = re.compile(r"\.tmp-(checkpoint-\d+)-\d+")  # checkpoints.save_checkpoint's temp dir
_TEMP_FILE = re.compile(r"(\.\w+)\.tmp\d+\b")  # write_json_atomic's temp file
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# ----------------------------------------------------------------------------
# the console and run.log
# ----------------------------------------------------------------------------
def scrub_temp_paths(text):
    """A checkpoint is written to .tmp-checkpoint-<step>-<pid> and renamed: name where the files end up."""
    return _TEMP_FILE.sub(r"\1", _TEMP_CHECKPOINT.sub(r"\1", text))


def _stamp(msg):
    return f"[{time.strftime('%H:%M:%S')}] {msg}"


_console = {}  # "stream": "stderr" while a prediction command runs (process state with one owner: console_on_stderr)


@contextlib.contextmanager
def console_on_stderr():
    """For the prediction commands, whose stdout is their data: while inside, log lines (and routed library
    warnings) go to stderr; afterwards to stdout again, so the next run in this process logs where it should."""
    previous = _console.get("stream")
    _console["stream"] = "stderr"
    try:
        yield
    finally:
        _console["stream"] = previous


def _emit(line, stream=None):
    """One finished line to the console (stdout unless told; lifting any live bar) and to run.log."""
    from tqdm import tqdm

    line = scrub_temp_paths(line)
    stream = stream or (sys.stderr if _console.get("stream") == "stderr" else sys.stdout)
    tqdm.write(line, file=stream)
    stream.flush()
    state.current().run_log.write(line)


def _progress(msg):
    """A progress line goes where tqdm puts its bar, stderr, so a CLI's stdout stays its data."""
    if is_main_process():
        _emit(_stamp(msg), sys.stderr)


def log(msg):
    if is_main_process():
        _emit(_stamp(msg))


def warn(msg):
    if is_main_process():
        _emit(_stamp(f"WARNING: {msg}"))


def warn_once(msg):
    warned = state.current().warned
    if msg not in warned:
        warned.add(msg)
        warn(msg)


def debug(msg):
    """Library chatter: shown (console and run.log) only with PADDLE_FINETUNE_DEBUG=1."""
    if os.environ.get(DEBUG_ENV, "") not in ("", "0") and is_main_process():
        _emit(_stamp(f"DEBUG {msg}"))


def error(msg):
    """The one line a failed run ends with ("error: ..." on stderr, every rank), kept in run.log too."""
    if is_main_process():
        _emit(f"error: {msg}", sys.stderr)
    else:
        print(scrub_temp_paths(f"error: {msg}"), file=sys.stderr, flush=True)


def describe_config(config):
    log("config:\n" + pprint.pformat(config, sort_dicts=False, width=110))


def attach_run_log(output_dir, command=None):
    """Call once output_dir may be written (after every check passed): from now on our lines are appended
    to output_dir/run.log, starting with those logged so far in this run. Appends on resume; rank 0 only.
    The run that attached it closes it (runtime.state.end). Returns the path (None on other ranks)."""
    if not is_main_process():
        return None
    run_log = state.current().run_log
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_LOG)
    state.note_write(path)
    run_log.close()
    f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - owned by the run's state; line-buffered, so a kill loses no line
    command = command or state.current().command or " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])
    with run_log.lock:
        f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(state.current().started))} {command}\n")
        if run_log.dropped:
            f.write(f"[{run_log.dropped} lines logged before this file was opened were not kept]\n")
        f.writelines(line + "\n" for line in run_log.pending)
        run_log.file, run_log.pending, run_log.dropped = f, [], 0
    return path


def record_in_run_log(lines):
    """Lines for run.log only (a traceback the console shows anyway): nothing when run.log is not attached."""
    run_log = state.current().run_log
    if run_log.file is not None:
        for line in lines:
            run_log.write(scrub_temp_paths(line))


def reset_console():
    """Log lines go to stdout again, whatever a command left behind."""
    _console.pop("stream", None)


# ----------------------------------------------------------------------------
# library chatter
# ----------------------------------------------------------------------------
# Loggers whose library adds its own console handler when it is imported, whatever we did before: a
# logger filter runs before any handler, so routing the record there and dropping it works either way.
# paddlenlp.utils.log.logger is logging.getLogger("PaddleNLP") with a colorlog StreamHandler on stderr,
# level DEBUG and propagate=False; it logs five "... saved in <temp dir>" lines per checkpoint.
_FILTERED_LOGGERS = ("PaddleNLP", "jieba")

# Import-time warnings that say nothing to someone fine-tuning a model.
_IGNORED_WARNINGS = (
    r"No ccache found",  # paddle.utils.cpp_extension, on every `import paddle`
    r"Setuptools is replacing distutils",  # _distutils_hack, imported by paddle
)


class _LibraryHandler(logging.Handler):
    """Library log records into our log: warnings and errors as WARNING lines, the rest at debug level."""

    def emit(self, record):
        if getattr(record, "_paddle_finetune_routed", False):  # reached us through a second logger
            return
        record._paddle_finetune_routed = True
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a library's bad format string must not kill the run
            msg = str(record.msg)
        name = "paddlenlp" if record.name == "PaddleNLP" else record.name.split(".")[0]
        text = f"{name}: {_ANSI.sub('', msg).strip()}"
        (_library_warning if record.levelno >= logging.WARNING else debug)(text)


def _library_warning(text):
    """A library's warning: ours on rank 0; on another rank its own stderr (the launcher's workerlog.N,
    not the console), which is where a worker's reason for dying has to be."""
    if is_main_process():
        warn(text)
    else:
        print(scrub_temp_paths(_stamp(f"rank {get_rank()} WARNING: {text}")), file=sys.stderr, flush=True)


_library_handler = _LibraryHandler()


class _Routing:
    """What quiet_libraries changed in the logging and warnings machinery, so unquiet_libraries can put it back:
    the process-wide routing has one owner (the first to quiet, e.g. a Run in a notebook) and a reset."""

    def __init__(self):
        self.on = False
        self.filtered = []  # loggers we added _route_to_log to
        self.removed = []  # (logger, console handler) we took off
        self.added = []  # loggers we added _library_handler to
        self.showwarning = None


_routing = _Routing()


def _route_to_log(record):
    _library_handler.handle(record)
    return False  # the library's own (coloured) handler never sees it


def _is_console_handler(handler):
    return (isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__))


def _route_console_handlers():
    """Every logger that prints to the console prints through us instead (paddle puts one on the root)."""
    loggers = [logging.getLogger()] + [lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)]
    for logger in loggers:
        consoles = [h for h in logger.handlers if _is_console_handler(h)]
        for handler in consoles:
            logger.removeHandler(handler)
            _routing.removed.append((logger, handler))
        if (consoles or logger is logging.getLogger()) and _library_handler not in logger.handlers:
            logger.addHandler(_library_handler)
            _routing.added.append(logger)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning: a Python warning is a WARNING line of ours (console and run.log)."""
    _library_warning(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")


def reroute_library_chatter():
    """After quiet_libraries(): catch the console handlers of libraries imported since (wandb, visualdl)."""
    if _routing.on:
        _route_console_handlers()


def quiet_libraries():
    """Call once, first thing (before paddle is imported, so its import-time chatter is caught too).

    paddlenlp's per-file save/load messages, jieba's dictionary messages, paddle's and datasets' INFO
    lines go to debug(); their warnings, and Python warnings, become our WARNING lines; wandb is started
    silent by open_reporting. Idempotent; open_reporting repeats the handler sweep for libraries
    imported since. Returns True when this call turned the routing on (its caller owns it and may undo it
    with unquiet_libraries), False when it was on already.
    """
    if _routing.on:
        _route_console_handlers()
        return False
    _routing.on = True
    _routing.showwarning = warnings.showwarning
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _route_to_log not in logger.filters:
            logger.addFilter(_route_to_log)
            _routing.filtered.append(logger)
    _route_console_handlers()
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.showwarning = _show_warning
    return True


def unquiet_libraries():
    """Undo quiet_libraries: every logger gets its console handlers back, Python warnings print as before."""
    global _routing
    if not _routing.on:
        return
    for logger in _routing.filtered:
        logger.removeFilter(_route_to_log)
    for logger in _routing.added:
        logger.removeHandler(_library_handler)
    for logger, handler in _routing.removed:
        if handler not in logger.handlers:
            logger.addHandler(handler)
    if warnings.showwarning is _show_warning:
        warnings.showwarning = _routing.showwarning
    ours = [f for f in warnings.filters if f[0] == "ignore" and getattr(f[1], "pattern", None) in _IGNORED_WARNINGS]
    for entry in ours:  # only the filters we added: a library imported meanwhile keeps its own
        warnings.filters.remove(entry)
    warnings._filters_mutated()
    _routing = _Routing()
