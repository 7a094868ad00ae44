"""A run: the object that owns what a run holds in this process, and its first steps.

`Run(config)` is a context manager. Entering it records the launch environment, quiets the libraries (and, when
it was the one to quiet them, gives their log handlers and warning display back at the end), begins the run's state (runtime.state: run.log, warnings shown once, which rank writes, staging dir) and claims
output_dir (an flock for the whole run). Leaving it, by success, error or signal, writes an error or a
traceback to run.log, releases the claims (a run refused before open_output_dir leaves output_dir as it was),
closes run.log and removes the staging dir. Signal handlers are the loop's, and only on the main thread
(training.loop). So a notebook kernel can hold any number of runs, one after another.

`start_run` is every trainer's first steps inside a Run, before any data is read.

Imports: the standard library; of the project `errors`, `checkpoints`, `models.loading`, `reporting`, `runtime`.
"""
import os
import shutil
import traceback

from paddle_finetune.checkpoints.output_dir import (
    check_output_dir,
    claim_run_output_dir,
    release_run_claims,
)
from paddle_finetune.errors import ConfigError, FinetuneError, RunInterrupted
from paddle_finetune.models.loading import check_pretrained_dir
from paddle_finetune.reporting.console import describe_config, quiet_libraries, record_in_run_log, unquiet_libraries
from paddle_finetune.runtime import state
from paddle_finetune.runtime.distributed import (
    get_rank,
    init_distributed,
    is_main_process,
    writes_output,
)
from paddle_finetune.runtime.environment import record_launch_env, setup_device
from paddle_finetune.runtime.multinode import check_output_dir_sharing
from paddle_finetune.runtime.rng import set_seed
from paddle_finetune.runtime.state import note_write


class Run:
    """One run's ownership of process state; see the module docstring."""

    def __init__(self, config, command=None):
        self.config = config
        self.command = command
        self.state = None
        self.owns_quieting = False

    def __enter__(self):
        record_launch_env()
        # Before paddle's import, so its import-time warnings are routed too. The command line quieted them
        # already (for its whole process); called from Python, this run quiets them and gives them back.
        self.owns_quieting = quiet_libraries()
        self.state = state.begin()
        self.state.command = self.command
        try:
            # One run per output_dir, for the whole run; a run refused before open_output_dir leaves it as it was.
            claim_run_output_dir(self.config)
        except BaseException:
            self._end()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc is not None:
                record_in_run_log(_run_log_lines(exc_type, exc, tb))
        finally:
            self._end()
        return False

    def _end(self):
        try:
            release_run_claims()
        finally:
            state.end(self.state)
            if self.owns_quieting:
                unquiet_libraries()


def _run_log_lines(exc_type, exc, tb):
    """What run.log keeps of the exception that ended a run: the error line users see, or the traceback."""
    if isinstance(exc, RunInterrupted):
        return []  # the loop logged where it stopped and how to resume
    if isinstance(exc, FinetuneError):
        return [f"error: {exc}"]
    if isinstance(exc, KeyboardInterrupt):
        return ["error: interrupted (Ctrl-C)"]
    return "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n").split("\n")


def start_run(config):
    """Every trainer's first steps, before any data is read: refuse a used output_dir, pick the device, find out
    whether the ranks share output_dir (runtime.multinode), seed."""
    if not config.get("do_train", True) and not config.get("pretrained_model"):
        raise ConfigError("do_train=False evaluates pretrained_model: set it to a model directory, a checkpoint or an output_dir")
    if is_main_process():  # other ranks may see another disk: their node's writer checks its own copy when it claims it
        check_output_dir(config)
    if config.get("pretrained_model"):  # a path that is no model is found before any data is read
        check_pretrained_dir(config["pretrained_model"])
    device = setup_device(config["device"], fast_kernels=config.get("fast_kernels", True))
    init_distributed()
    check_output_dir_sharing(config)
    set_seed(config["seed"], get_rank())
    describe_config(config)
    return device


def copy_staged_files(staged, output_dir):
    """Staged files into output_dir (copies: a tokenizer keeps reading its vocab from where it was made)."""
    if writes_output():
        for name, path in (staged or {}).items():
            note_write(os.path.join(output_dir, name))
            shutil.copyfile(path, os.path.join(output_dir, name))
