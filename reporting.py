"""What a run tells its user: the console and output_dir/run.log, progress bars, quieted library
chatter, the dashboards (wandb, VisualDL), result files (JSON/JSONL, all_results.json) and a
picture of the training curves.

Only rank 0 reports; other ranks are silent, except error() and library warnings, which a rank prints to
its own stderr (the launcher's log/workerlog.N): a dying rank must say why.

The console. Our lines are "[HH:MM:SS] message" on stdout, written through tqdm.write so a live bar is
lifted out of the way and redrawn below them. A progress bar is a tqdm bar (stderr, ETA) when stderr is
a terminal, and plain "[time] desc: n/total (p%) rate, ETA" lines every 10% or 30 s when it is not (a
pipe, a notebook's `!python train.py`, a log file), so piped output holds no carriage-return redraws or
cursor codes. Every bar ends with one summary line. Progress lines go to stderr, where tqdm puts its
bars, so a prediction CLI's stdout holds only its data; errors go to stderr too. quiet_libraries() routes what paddle, paddlenlp,
jieba, datasets and Python's warnings print into this log: warnings as WARNING lines, the rest at debug
level (hidden unless PADDLE_FINETUNE_DEBUG=1); wandb is started silent and we print its sync line.
Temporary checkpoint paths (.tmp-checkpoint-<step>-<pid>) are rewritten to the final ones in every line.

run.log. Every console line of ours (not bar redraws) is also kept for output_dir/run.log: buffered in
memory until attach_run_log(output_dir), which the engine calls once output_dir may be written, then
appended line by line. A run refused before that writes nothing.

Imports: the standard library; tqdm, wandb, visualdl and matplotlib inside the functions that use them;
of the project only `distributed`. Nothing here imports paddle or paddlenlp: their loggers are reached
by name, so quiet_libraries() works before or after they are imported.
"""
import json
import logging
import math
import os
import pprint
import re
import sys
import threading
import time
import warnings

from distributed import get_rank, is_main_process

DEBUG_ENV = "PADDLE_FINETUNE_DEBUG"  # "1": library chatter shown (and kept in run.log) as DEBUG lines
PROGRESS_ENV = "PADDLE_FINETUNE_PROGRESS"  # force "bar", "plain" or "off" instead of choosing by terminal
RUN_LOG = "run.log"
VISUALDL_DIR = "visualdl"
TARGETS = ("wandb", "visualdl")

_PROCESS_START = time.time()
_TEMP_CHECKPOINT = re.compile(r"\.tmp-(checkpoint-\d+)-\d+")  # checkpoints.save_checkpoint's temp dir
_TEMP_FILE = re.compile(r"(\.\w+)\.tmp\d+\b")  # write_json_atomic's temp file
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# ----------------------------------------------------------------------------
# the console and run.log
# ----------------------------------------------------------------------------
class _RunLog:
    """Where our lines go besides the console: a buffer until output_dir may be written, then run.log."""

    MAX_PENDING = 20000  # lines kept before attach; a process that never attaches must not grow forever

    def __init__(self):
        self.lock = threading.Lock()
        self.file = None
        self.pending = []
        self.dropped = 0
        self.previous_excepthook = None
        self.in_hook = False

    def write(self, line):
        with self.lock:
            if self.file is not None:
                self.file.write(line + "\n")
            elif len(self.pending) < self.MAX_PENDING:
                self.pending.append(line)
            else:
                self.dropped += 1


_run_log = _RunLog()
_warned = set()


def scrub_temp_paths(text):
    """A checkpoint is written to .tmp-checkpoint-<step>-<pid> and renamed: name where the files end up."""
    return _TEMP_FILE.sub(r"\1", _TEMP_CHECKPOINT.sub(r"\1", text))


def _stamp(msg):
    return f"[{time.strftime('%H:%M:%S')}] {msg}"


_console = {}


def log_to_stderr():
    """For the prediction CLIs, whose stdout is their data: log lines (and routed library warnings) go to stderr."""
    _console["stream"] = sys.stderr


def _emit(line, stream=None):
    """One finished line to the console (stdout unless told; lifting any live bar) and to run.log."""
    from tqdm import tqdm

    line = scrub_temp_paths(line)
    stream = stream or _console.get("stream") or sys.stdout
    tqdm.write(line, file=stream)
    stream.flush()
    _run_log.write(line)


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
    if msg not in _warned:
        _warned.add(msg)
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


def attach_run_log(output_dir):
    """Call once output_dir may be written (after every check passed): from now on our lines are appended
    to output_dir/run.log, starting with those logged so far. Appends on resume; rank 0 only.
    An uncaught exception's traceback is appended too. Returns the path (None on other ranks)."""
    if not is_main_process():
        return None
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, RUN_LOG)
    close_run_log()
    f = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - stays open; line-buffered, so a kill loses no line
    command = " ".join([os.path.basename(sys.argv[0] or "python")] + sys.argv[1:])
    with _run_log.lock:
        f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(_PROCESS_START))} {command}\n")
        if _run_log.dropped:
            f.write(f"[{_run_log.dropped} lines logged before this file was opened were not kept]\n")
        f.writelines(line + "\n" for line in _run_log.pending)
        _run_log.file, _run_log.pending, _run_log.dropped = f, [], 0
    if _run_log.previous_excepthook is None:  # else still in the chain, under a hook installed since
        _run_log.previous_excepthook = sys.excepthook
        sys.excepthook = _excepthook
    return path


def close_run_log():
    """Stop writing run.log (the engine may call it at the end; exit closes it anyway). Lines are buffered again."""
    with _run_log.lock:
        f, _run_log.file = _run_log.file, None
    if f is not None:
        f.close()
    # Unhook only when ours is on top: a hook installed since (wandb's) calls ours, and must stay.
    if _run_log.previous_excepthook is not None and sys.excepthook is _excepthook:
        sys.excepthook, _run_log.previous_excepthook = _run_log.previous_excepthook, None


def _excepthook(exc_type, exc, tb):
    """sys.excepthook while run.log is attached: the traceback goes to run.log, then on to the previous hook."""
    import traceback

    if _run_log.in_hook:  # hooks that call each other: once is enough
        return
    _run_log.in_hook = True
    try:
        for line in "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n").split("\n"):
            _run_log.write(scrub_temp_paths(line))
        previous = _run_log.previous_excepthook or sys.__excepthook__
        # A hook installed on top of ours (wandb's) has printed the traceback and then called us, as
        # wandb calls any non-default hook it found: print it only when we are the top hook.
        if sys.excepthook is _excepthook or previous is not sys.__excepthook__:
            previous(exc_type, exc, tb)
    finally:
        _run_log.in_hook = False


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
_quiet = {"on": False}


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
        if (consoles or logger is logging.getLogger()) and _library_handler not in logger.handlers:
            logger.addHandler(_library_handler)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning: a Python warning is a WARNING line of ours (console and run.log)."""
    _library_warning(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})")


def quiet_libraries():
    """Call once, first thing (before paddle is imported, so its import-time chatter is caught too).

    paddlenlp's per-file save/load messages, jieba's dictionary messages, paddle's and datasets' INFO
    lines go to debug(); their warnings, and Python warnings, become our WARNING lines; wandb is started
    silent by open_reporting. Idempotent; open_reporting repeats the handler sweep for libraries
    imported since.
    """
    _quiet["on"] = True
    for name in _FILTERED_LOGGERS:
        logger = logging.getLogger(name)
        if _route_to_log not in logger.filters:
            logger.addFilter(_route_to_log)
    _route_console_handlers()
    for pattern in _IGNORED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.showwarning = _show_warning


# ----------------------------------------------------------------------------
# progress bars
# ----------------------------------------------------------------------------
def _bar_mode():
    if not is_main_process():
        return "off"
    forced = os.environ.get(PROGRESS_ENV, "").lower()
    if forced in ("bar", "plain", "off"):
        return forced
    stream = sys.stderr
    is_tty = getattr(stream, "isatty", None)
    return "bar" if is_tty is not None and is_tty() and os.environ.get("TERM") != "dumb" else "plain"


def _duration(seconds):
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _rate(done, seconds, unit):
    if done <= 0 or seconds <= 0:
        return f"? {unit}/s"
    per_second = done / seconds
    if per_second < 1:
        return f"{1 / per_second:.2f} s/{unit}"
    return f"{per_second:.{2 if per_second < 10 else 1 if per_second < 100 else 0}f} {unit}/s"


def _format_postfix(values):
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


class ProgressBar:
    """What progress_bar returns: update(n), set_postfix(...), close(), a context manager.

    mode "bar": a tqdm bar on stderr (ETA, redraws), cleared at close; "plain": a line at most every
    `every_fraction` of the total or `every_seconds`, never closer than `min_seconds`; "off": nothing.
    Either way close() logs one line: "desc: n/total unit in 12.3s (4.56 unit/s), postfix".
    """

    def __init__(self, total, desc, initial=0, unit="it", mode=None, clock=time.monotonic,
                 every_fraction=0.1, every_seconds=30.0, min_seconds=2.0):
        self.total, self.desc, self.unit, self.n, self.initial = total, desc, unit, initial, initial
        self.mode = mode or _bar_mode()
        self.postfix = {}
        self._clock, self._every_fraction, self._every_seconds, self._min_seconds = clock, every_fraction, every_seconds, min_seconds
        self._start = self._last_line = clock()
        self._next_mark = self._mark_after(initial)
        self._closed = False
        self._tqdm = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._tqdm = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                              dynamic_ncols=True, mininterval=0.5, leave=False)

    def _mark_after(self, n):
        if not self.total:
            return math.inf
        step = self.total * self._every_fraction
        return (math.floor(n / step + 1e-9) + 1) * step

    def update(self, n=1):
        self.n += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.mode == "plain" and self.n < (self.total or math.inf):
            now = self._clock()
            due = self.n >= self._next_mark or now - self._last_line >= self._every_seconds
            if due and now - self._last_line >= self._min_seconds:
                self._last_line, self._next_mark = now, self._mark_after(self.n)
                _progress(self._progress_line(now))

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        self.postfix = {**(ordered_dict or {}), **kwargs}
        if self._tqdm is not None:
            self._tqdm.set_postfix(self.postfix, refresh=refresh)

    def _progress_line(self, now):
        elapsed, done = now - self._start, self.n - self.initial
        line = f"{self.desc}: {self.n}/{self.total if self.total else '?'}"
        if self.total:
            line += f" ({100 * self.n / self.total:.0f}%)"
        line += f" {_rate(done, elapsed, self.unit)}"
        if self.total and done > 0:
            line += f", ETA {_duration((self.total - self.n) * elapsed / done)}"
        return line + (f", {_format_postfix(self.postfix)}" if self.postfix else "")

    def summary_line(self):
        elapsed = self._clock() - self._start
        line = f"{self.desc}: {self.n}/{self.total if self.total else '?'} {self.unit} in {_duration(elapsed)} ({_rate(self.n - self.initial, elapsed, self.unit)})"
        return line + (f", {_format_postfix(self.postfix)}" if self.postfix else "")

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self._tqdm is not None:
            self._tqdm.close()
        if self.mode != "off" and (self.n or self.total):
            _progress(self.summary_line())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(total, desc, initial=0, unit="it"):
    """A bar for `total` units, starting at `initial` (a resumed run): see ProgressBar."""
    return ProgressBar(total, desc, initial=initial, unit=unit)


# ----------------------------------------------------------------------------
# result files
# ----------------------------------------------------------------------------
def write_json_atomic(path, obj):
    """A reader (or a kill) never sees half a file: write a temp file, fsync, rename over."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path, record):
    if not is_main_process():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _jsonl_record(line):
    """One JSONL line as a dict; None for a line a SIGKILL cut in half (or anything not an object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_jsonl(path):
    """The records of a JSONL log, skipping blank and broken lines; [] for a missing file."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [r for r in map(_jsonl_record, f) if r is not None]


def _jsonl_step(line):
    record = _jsonl_record(line)
    return None if record is None else record.get("step", 0)


def truncate_jsonl(path, max_step):
    """After a resume, drop records a killed run logged past its last checkpoint."""
    if not is_main_process() or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if _jsonl_step(line) is not None and _jsonl_step(line) <= max_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def _plain(value):
    """numpy and paddle scalars as Python numbers, so JSON and wandb get numbers, not their repr."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _read_json_dict(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        warn(f"{path} is unreadable ({e}); rewriting it")
        return {}


# key prefix -> the HF-style file it also goes to (all of them go to all_results.json)
RESULT_FILES = (("train_", "train_results.json"), ("eval_", "eval_results.json"),
                ("test_", "predict_results.json"), ("predict_", "predict_results.json"))


def write_results(output_dir, results):
    """all_results.json (merged into an existing one, as HF's save_metrics does) and, for the keys with a
    train_/eval_/test_/predict_ prefix, train_results.json / eval_results.json / predict_results.json
    (merged the same way). Each file is written atomically. Returns the merged all_results dict (rank 0)."""
    if not is_main_process():
        return {}
    results = {k: _plain(v) for k, v in results.items()}
    files = {"all_results.json": results}
    for prefix, name in RESULT_FILES:
        part = {k: v for k, v in results.items() if k.startswith(prefix)}
        if part:
            files[name] = {**files.get(name, {}), **part}
    merged = {}
    for name, values in files.items():
        path = os.path.join(output_dir, name)
        merged[name] = {**_read_json_dict(path), **values}
        write_json_atomic(path, merged[name])
    return merged["all_results.json"]


_TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_tokens_per_second")


def _number(value):
    """A result for people: 378, 6, 99.9012, 0.1235, 3e-05."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) < 1e-2 or abs(value) >= 1e5:
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _metrics_text(results, prefixes):
    items = [(k.split("_", 1)[1], v) for k, v in results.items()
             if k.startswith(prefixes) and not k.endswith(_TIMING_SUFFIXES) and not isinstance(v, (dict, list, str))]
    return ", ".join(f"{k}={_number(v)}" for k, v in items)


def summary_lines(results):
    """The end-of-run block the engine logs: log("\\n".join(summary_lines(results))).

    Reads (each optional): train_steps, epoch, train_runtime (s), train_tokens_per_second, train_loss;
    metric_for_best, best_metric, best_step, best_checkpoint; final_model (and final_model_step);
    eval_<metric> (the final model's dev metrics); test_<metric> or predict_<metric>. None counts as absent.
    """
    results = {k: v for k, v in results.items() if v is not None}
    lines = ["summary:"]
    head = " ".join(part for part in (
        f"{_number(results['train_steps'])} steps" if "train_steps" in results else "",
        f"({_number(results['epoch'])} epochs)" if "epoch" in results else "",
        f"in {_duration(float(results['train_runtime']))}" if "train_runtime" in results else "",
    ) if part)
    trained = [part for part in (
        head,
        f"{float(results['train_tokens_per_second']):,.0f} tokens/s" if "train_tokens_per_second" in results else "",
        f"final loss {_number(results['train_loss'])}" if "train_loss" in results else "",
    ) if part]
    if trained:
        lines.append(f"  trained      {', '.join(trained)}")
    if results.get("best_metric") is not None:
        best = f"{results.get('metric_for_best') or 'metric'}={_number(results['best_metric'])}"
        if results.get("best_step") is not None:
            best += f" at step {_number(results['best_step'])}"
        if results.get("best_checkpoint"):
            best += f" ({results['best_checkpoint']})"
        lines.append(f"  best         {best}")
    evaluated = _metrics_text(results, ("eval_",))
    if evaluated:
        at = f" (step {_number(results['final_model_step'])})" if "final_model_step" in results else ""
        lines.append(f"  dev          {evaluated}{at}")
    tested = _metrics_text(results, ("test_", "predict_"))
    if tested:
        lines.append(f"  test         {tested}")
    if results.get("final_model"):
        at = f" (step {_number(results['final_model_step'])})" if "final_model_step" in results else ""
        lines.append(f"  final model  {results['final_model']}{at}")
    return [scrub_temp_paths(line) for line in lines] if len(lines) > 1 else []


# ----------------------------------------------------------------------------
# dashboards: wandb and VisualDL
# ----------------------------------------------------------------------------
def wandb_has_credentials():
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def parse_targets(targets):
    """["wandb", "visualdl"] from a list or from a "wandb,visualdl" string; "none" and "" mean nothing."""
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [str(t).strip().lower() for t in (targets or [])]
    names = [t for t in names if t and t != "none"]
    unknown = sorted(set(names) - set(TARGETS))
    if unknown:
        raise ValueError(f"unknown report_to target(s) {unknown}; choose among {list(TARGETS)}")
    return list(dict.fromkeys(names))


def _open_wandb(config, output_dir, run_id):
    """A silent wandb run (offline without credentials: we print the sync command); None if it cannot start."""
    try:
        import wandb
    except ImportError:
        warn_once("report_to includes wandb but wandb is not installed: pip install wandb")
        return None
    offline = not wandb_has_credentials() and os.environ.get("WANDB_MODE") not in ("disabled", "offline")
    try:
        # Silent: no "Tracking run", run history or sync block (init's settings, the run's printer) and
        # no "Detected [huggingface_hub.inference] in use" or Weave advert (wandb's global terminal
        # settings, fixed when wandb.setup creates its singleton; wandb.init alone would create it loud).
        wandb.setup(settings=wandb.Settings(silent=True))
        run = wandb.init(
            project=config.get("wandb_project") or "paddle-finetune",
            name=config.get("wandb_run_name") or None,
            dir=output_dir,
            config=config,
            id=run_id,
            resume="allow",
            mode="offline" if offline else None,
            settings=wandb.Settings(silent=True),
        )
    except Exception as e:  # noqa: BLE001 - a dashboard that cannot start must not stop the training
        warn(f"wandb could not start ({type(e).__name__}: {e}); continuing without wandb")
        return None
    if getattr(run, "offline", False) and getattr(run, "dir", None):
        where = os.path.dirname(run.dir)
        log(f"wandb: no credentials found, logging offline to {where}; upload later with: wandb sync {where}")
    elif getattr(run, "url", None):
        log(f"wandb: {run.url}")
    return run


def _visualdl_record_files(logdir):
    if not os.path.isdir(logdir):
        return []
    return sorted(n for n in os.listdir(logdir) if "vdlrecords" in n and os.path.isfile(os.path.join(logdir, n)))


def _next_record_file(existing):
    """A new record file name that sorts after every existing one: VisualDL's reader shows only the
    last name of a directory (and LogWriter truncates a name made in the same second)."""
    number = int(time.time())
    for name in existing:
        m = re.fullmatch(r"vdlrecords\.(\d+)\.log", name)
        if m:
            number = max(number, int(m.group(1)) + 1)
    return f"vdlrecords.{number:010d}.log"


def read_visualdl_records(path):
    """(kind, tag, step, value, walltime_ms) of one VisualDL record file, kind "scalar" or "text",
    read with VisualDL's own record reader; stops at a record a kill cut in half."""
    from google.protobuf.message import DecodeError
    from visualdl.proto import record_pb2
    from visualdl.reader.record_reader import RecordReader

    out = []
    for raw in RecordReader(path).get_all():
        record = record_pb2.Record()
        try:
            record.ParseFromString(raw)
        except DecodeError:
            break
        for value in record.values:
            kind = value.WhichOneof("one_value")
            if kind == "value":
                out.append(("scalar", value.tag, value.id, value.value, value.timestamp))
            elif kind == "text":
                out.append(("text", value.tag, value.id, value.text.encoded_text_string, value.timestamp))
    return out


def _config_text(config):
    return json.dumps(config, ensure_ascii=False, indent=2, default=str)


def _open_visualdl(logdir, config, resume_step, display_name):
    """A LogWriter on logdir. On resume, the records up to resume_step are copied into the new file and
    the old files removed, so a reader sees one run whose curves continue (no replayed steps twice)."""
    try:
        from visualdl import LogWriter
    except ImportError:
        warn_once("report_to includes visualdl but visualdl is not installed: pip install visualdl")
        return None
    os.makedirs(logdir, exist_ok=True)
    existing = _visualdl_record_files(logdir)
    carried = []
    if resume_step is not None and existing:
        try:
            carried = [r for r in read_visualdl_records(os.path.join(logdir, existing[-1]))
                       if r[2] <= resume_step and not (r[0] == "text" and r[1] == "config")]
        except Exception as e:  # noqa: BLE001 - an unreadable old file must not stop the run
            warn(f"visualdl: could not read {existing[-1]} ({type(e).__name__}: {e}); its records are not carried over")
    writer = LogWriter(logdir=logdir, file_name=_next_record_file(existing), display_name=display_name)
    for kind, tag, step, value, walltime in carried:
        if kind == "scalar":
            writer.add_scalar(tag, value, step, walltime=walltime)
        else:
            writer.add_text(tag, value, step=step, walltime=walltime)
    writer.add_text("config", _config_text(config), step=0)
    if resume_step is not None:
        writer.flush()  # the carried records are on disk before the old files go
        for name in existing:
            os.remove(os.path.join(logdir, name))
    return writer


def _hparams(config, prefix=""):
    """Flat int/float/str hyperparameters for VisualDL's hparams view (nested dicts as a.b)."""
    out = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_hparams(v, key + "."))
        elif isinstance(v, bool):
            out[key] = str(v)
        elif isinstance(v, (int, float, str)):
            out[key] = v
        elif v is not None:
            out[key] = str(v)
    return out


class Reporting:
    """The open dashboards of one run (rank 0). Every method is a no-op for a target that is not open,
    so the loop calls them unconditionally. Tags are the caller's: train/loss, train/lr,
    train/tokens_per_s, eval/<metric>."""

    def __init__(self, wandb_run=None, visualdl_writer=None, config=None):
        self.wandb_run = wandb_run
        self.visualdl = visualdl_writer
        self.config = config or {}
        self.last_step = 0
        self._tags = []

    @property
    def wandb_run_id(self):
        """Save it in the checkpoint's train state; pass it back as run_id when resuming."""
        return getattr(self.wandb_run, "id", None)

    def _wandb_accepts(self, step):
        # wandb drops (and prints a warning for) a step below the run's last one: after resuming an
        # online run from an older checkpoint, the replayed steps are already on the server.
        current = getattr(self.wandb_run, "step", 0) or 0
        if step < current:
            warn_once(f"wandb: this run already has steps up to {current}; steps replayed after the resume are not sent again")
            return False
        return True

    def scalars(self, metrics, step):
        metrics = {k: _plain(v) for k, v in metrics.items()}
        self.last_step = max(self.last_step, step)
        for tag in metrics:
            if tag not in self._tags:
                self._tags.append(tag)
        if self.wandb_run is not None and self._wandb_accepts(step):
            self.wandb_run.log(metrics, step=step)
        if self.visualdl is not None:
            for tag, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.visualdl.add_scalar(tag, float(value), step)

    def table(self, name, columns, rows, step):
        """A table of rows (e.g. eval samples); wandb only."""
        if self.wandb_run is not None and self._wandb_accepts(step):
            import wandb

            self.wandb_run.log({name: wandb.Table(columns=list(columns), data=[list(r) for r in rows])}, step=step)

    def summary(self, values):
        """End-of-run values (best metric, test metrics): the wandb run summary; in VisualDL a "summary"
        text and the hparams record linking the config to the eval/* curves."""
        values = {k: _plain(v) for k, v in values.items()}
        if self.wandb_run is not None:
            self.wandb_run.summary.update(values)
        if self.visualdl is not None:
            self.visualdl.add_text("summary", "\n".join(f"{k}: {v}" for k, v in values.items()), step=self.last_step)
            metrics = [t for t in self._tags if t.startswith("eval/")]
            if metrics:
                self.visualdl.add_hparams(_hparams(self.config), metrics)

    def flush(self):
        """Call after each checkpoint save: VisualDL writes from a background thread, and a resume carries
        over only what reached its file."""
        if self.visualdl is not None:
            self.visualdl.flush()

    def close(self):
        """Finish wandb (repeating the sync command when offline) and flush VisualDL. Idempotent."""
        run, self.wandb_run = self.wandb_run, None
        if run is not None:
            run.finish()
            if getattr(run, "offline", False) and getattr(run, "dir", None):
                log(f"wandb: offline run saved; upload it with: wandb sync {os.path.dirname(run.dir)}")
        writer, self.visualdl = self.visualdl, None
        if writer is not None:
            writer.close()


def open_reporting(targets, config, output_dir, run_id=None, resume_step=None):
    """Open the dashboards named in targets ("wandb", "visualdl") for a run writing to output_dir.

    run_id: the wandb run id saved in the checkpoint, so a resumed run continues the same wandb run.
    resume_step: the step training restarts from when resuming (records past it, logged by a killed
    run, are dropped from VisualDL as truncate_jsonl drops them from the JSONL logs); None for a new run.
    Other ranks get a Reporting that does nothing.
    """
    targets = parse_targets(targets)
    if not is_main_process():
        return Reporting()
    if _quiet["on"]:
        _route_console_handlers()  # libraries imported since quiet_libraries() may have added console handlers
    wandb_run = _open_wandb(config, output_dir, run_id or None) if "wandb" in targets else None
    writer = None
    if "visualdl" in targets:
        writer = _open_visualdl(os.path.join(output_dir, VISUALDL_DIR), config, resume_step,
                                display_name=os.path.basename(os.path.abspath(output_dir)))
    return Reporting(wandb_run, writer, config)


# ----------------------------------------------------------------------------
# the training curves
# ----------------------------------------------------------------------------
TRAIN_LOG = "train_log.jsonl"
METRICS_LOG = "metrics.jsonl"
CURVES_FILE = "training_curves.png"
_NOT_METRICS = ("step", "epoch", "split")


def _by_step(records):
    """One record per step (the last one logged wins), sorted by step."""
    out = {}
    for r in records:
        if isinstance(r.get("step"), (int, float)) and not isinstance(r.get("step"), bool):
            out[r["step"]] = r
    return [out[s] for s in sorted(out)]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _series(records, key):
    points = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _best_from_state(output_dir):
    """(best step, metric_for_best) from trainer_state.json's best checkpoint, (None, None) without one."""
    state = _read_json_dict(os.path.join(output_dir, "trainer_state.json"))
    m = re.search(r"checkpoint-(\d+)$", str(state.get("best_checkpoint") or ""))
    return (int(m.group(1)) if m else None), state.get("metric_for_best")


def training_curve_panels(output_dir):
    """What plot_training_curves draws: (title, steps, values, "train"|"eval", key) per panel with data.
    Dev records only (a record whose "split" is not "dev" is a test result); the last record of a step wins."""
    train = _by_step(read_jsonl(os.path.join(output_dir, TRAIN_LOG)))
    evals = _by_step([r for r in read_jsonl(os.path.join(output_dir, METRICS_LOG)) if r.get("split", "dev") == "dev"])
    names = list(dict.fromkeys(k for r in evals for k, v in r.items() if k not in _NOT_METRICS and _is_number(v)))
    panels = [(title, *_series(train, key), "train", key) for title, key in (("train loss", "loss"), ("learning rate", "lr"))]
    panels += [(f"eval {name}", *_series(evals, name), "eval", name) for name in names]
    return [p for p in panels if p[1]]


def plot_training_curves(output_dir, out_path=None, best_step=None):
    """Train loss, learning rate and every eval metric by step, from output_dir/train_log.jsonl and
    metrics.jsonl (test records, those with a "split" other than "dev", are skipped), with the best
    step marked (default: trainer_state.json's best checkpoint). Written to out_path (default
    output_dir/training_curves.png) atomically. Returns the path, or None when there is nothing to draw."""
    if not is_main_process():
        return None
    panels = training_curve_panels(output_dir)
    if not panels:
        return None
    state_best, metric_for_best = _best_from_state(output_dir)
    best_step = state_best if best_step is None else best_step

    # No pyplot: no display, no backend switch, no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    all_steps = [s for p in panels for s in p[1]] + ([best_step] if best_step is not None else [])
    lo, hi = min(all_steps), max(all_steps)
    pad = max(1.0, 0.04 * (hi - lo))  # room for a single point and for the best-step label
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.3 * nrows + 0.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, steps, values, kind, key) in zip(axes, panels):
        is_best_metric = kind == "eval" and key == metric_for_best
        ax.plot(steps, values, color="tab:blue" if kind == "train" else "tab:green", linewidth=1.6,
                marker="o" if len(steps) <= 40 else None, markersize=3.5)
        ax.set_xlim(lo - pad, hi + pad)  # every panel on the same steps, so they line up
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        finite = [v for v in values if math.isfinite(v)]
        if kind == "train" and key == "loss" and finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")  # a loss that fell 100x: the late, small gains are invisible on a linear axis
            title += " (log scale)"
        if best_step is not None:
            ax.axvline(best_step, color="tab:red", linestyle="--", linewidth=1, alpha=0.6)
            if kind == "eval" and best_step in steps:
                y = values[steps.index(best_step)]
                ax.plot([best_step], [y], marker="*", color="tab:red", markersize=13, zorder=5)
                ax.annotate(f"{y:.4g}", (best_step, y), textcoords="offset points", xytext=(-8, 7), ha="right",
                            fontsize=9, color="tab:red")
        ax.set_title(title + ("  (metric for best)" if is_best_metric else ""), fontsize=11,
                     fontweight="bold" if is_best_metric else "normal")
    for ax in axes[len(panels):]:
        ax.axis("off")
    name = os.path.basename(os.path.abspath(output_dir))
    fig.suptitle(f"{name}: training curves" + (f"   best step {best_step} (red dashes)" if best_step is not None else ""), fontsize=12)
    path = out_path or os.path.join(output_dir, CURVES_FILE)
    tmp = f"{path}.tmp{os.getpid()}"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
