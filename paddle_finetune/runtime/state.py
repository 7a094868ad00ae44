"""What one run holds in this process, with one owner and a reset (accelerate's PartialState, per run).

A run (training.session.Run) begins a RunState on entry and ends it on exit, by success, error or signal;
the library's modules read the current one instead of keeping registries of their own:

    warned          the warnings already shown once (reporting.warn_once)
    run_log         output_dir/run.log once attached, and the lines logged before it (reporting.console)
    output_writer   the rank that writes this rank's output_dir (runtime.distributed, runtime.multinode)
    claims          the output directories this run claimed: lock held, and what it created (checkpoints)
    staging_dir     a temp dir for files made before output_dir may change (a vocab built from the data)
    on_write        who is told of each path about to be written (note_write): the output_dir's ownership
                    record, installed once output_dir opens (checkpoints.ownership.RunRecorder)
    started         when the run began (run.log's header)

Outside a run (a prediction tool, a notebook cell that calls a library function) a process-wide default
state is current; begin() refuses to nest a second run in a process that already has one going.

What stays per process on purpose, elsewhere: the launch environment (runtime.environment: recorded once,
before paddle loads), the routing of libraries' log handlers (reporting.console), the TCP store's exchange
counters (runtime.distributed: every rank counts the same exchanges, so they are never reset) and the
speed patches' built classes (speedups).

Imports: the standard library only.
"""
import dataclasses
import shutil
import threading
import time
from typing import Any, Callable, Dict, List, Optional


class RunLog:
    """Where our lines go besides the console: a buffer until output_dir may be written, then run.log."""

    MAX_PENDING = 20000  # lines kept before attach; a process that never attaches must not grow forever

    def __init__(self):
        self.lock = threading.Lock()
        self.file = None
        self.pending: List[str] = []
        self.dropped = 0

    def write(self, line):
        with self.lock:
            if self.file is not None:
                self.file.write(line + "\n")
            elif len(self.pending) < self.MAX_PENDING:
                self.pending.append(line)
            else:
                self.dropped += 1

    def close(self):
        with self.lock:
            f, self.file = self.file, None
        if f is not None:
            f.close()


@dataclasses.dataclass
class RunState:
    warned: set = dataclasses.field(default_factory=set)
    run_log: RunLog = dataclasses.field(default_factory=RunLog)
    output_writer: int = 0
    claims: Dict[str, Any] = dataclasses.field(default_factory=dict)  # abs output_dir -> checkpoints.output_dir.OutputDirClaim
    staging_dir: Optional[str] = None
    active: bool = False  # a run began it (not the process-wide default)
    started: float = dataclasses.field(default_factory=time.time)  # run.log's header
    command: Optional[str] = None  # run.log's header: the command line, or how the Python API was called
    on_write: Optional[Callable[..., None]] = None  # note_write's hook: records what the run writes in output_dir

    def release(self):
        """Close run.log and remove the staging dir (claims are released by their owner, the session)."""
        self.run_log.close()
        if self.staging_dir:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            self.staging_dir = None


_current = RunState()


def current() -> RunState:
    return _current


def begin() -> RunState:
    """A fresh state for a run; refuses to start one while another is going in this process."""
    global _current
    if _current.active:
        raise RuntimeError("a run is already going in this process; one at a time")
    _current = RunState(active=True)
    return _current


def note_write(path, kind="file") -> None:
    """Say that `path` ("file", or "dir" for a folder) is about to be written: a run records what it writes in
    its output_dir before writing it, so that it can later prove the file is its own (checkpoints.ownership)."""
    hook = _current.on_write
    if hook is not None:
        hook(path, kind)


def note_removed(path) -> None:
    """Say that `path` (a top-level entry of output_dir the run wrote) was removed, e.g. a rotated checkpoint."""
    forget = getattr(_current.on_write, "forget", None)
    if forget is not None:
        forget(path)


def end(state: RunState) -> None:
    """Release what `state` holds and make a clean process-wide default current again."""
    global _current
    state.release()
    if _current is state:
        _current = RunState()
