"""The output directory: one run at a time (an flock held for the run), refusing a used one, touching
nothing until every check has passed; on nodes without a shared disk each node's writer claims its own copy
the same way (runtime.multinode decides who).

Imports: the standard library; of the project `errors`, `checkpoints.files`, `checkpoints.listing`,
`checkpoints.storage`, `reporting` and `runtime.distributed`.
"""
import dataclasses
import errno
import os
import shutil
import tempfile
from typing import List, Optional

from paddle_finetune.checkpoints.files import (
    CHECKPOINT_PREFIX,
    LOCK_FILE,
    SHARING_CHECK_PREFIX,
    checkpoint_step,
)
from paddle_finetune.checkpoints.storage import save_config
from paddle_finetune.errors import ConfigError
from paddle_finetune.reporting.console import attach_run_log, log
from paddle_finetune.runtime import state
from paddle_finetune.runtime.distributed import is_main_process, writes_output


def _previous_run_files(out):
    return sorted(n for n in (os.listdir(out) if os.path.isdir(out) else []) if n != "wandb" and not n.startswith("."))


def check_output_dir(config):
    """Refuse to mix a new run into an old one's files unless asked to resume or overwrite.
    Only checks: overwrite_output_dir clears in open_output_dir, once every check has passed."""
    out = config["output_dir"]
    previous = _previous_run_files(out)
    if not previous or config.get("resume_from_checkpoint") or config.get("overwrite_output_dir"):
        return
    raise ConfigError(
        f"output_dir {out} is not empty ({', '.join(previous[:5])}{', ...' if len(previous) > 5 else ''}); "
        "nothing was changed. Resume with --resume_from_checkpoint=auto, pick another --output_dir, "
        "or pass --overwrite_output_dir=True to replace it"
    )


@dataclasses.dataclass
class OutputDirClaim:
    """What claim_output_dir holds and created, so release_output_dir can undo exactly that."""

    output_dir: str
    fd: Optional[int] = None
    created_dirs: List[str] = dataclasses.field(default_factory=list)
    lock_created: bool = False
    lock_previous: bytes = b""
    opened: bool = False  # open_output_dir ran: the run's files are real now, keep them




def _make_dirs(out):
    """Create output_dir and missing parents; returns the ones created, outermost first."""
    missing, path = [], os.path.abspath(out)
    while not os.path.exists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise ConfigError(f"output_dir {out}: {path} exists and is not a directory")
    created = []
    for d in reversed(missing):
        try:
            os.mkdir(d)
        except OSError as e:
            for c in reversed(created):
                os.rmdir(c)
            raise ConfigError(f"output_dir {out} cannot be created: {e.strerror} ({d})") from None
        created.append(d)
    return created


def _take_lock(claim):
    import fcntl

    path = os.path.join(claim.output_dir, LOCK_FILE)
    for _ in range(20):
        created = True
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            created = False
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:  # the holder removed it as it finished: try again
                continue
            except OSError as e:
                raise ConfigError(f"output_dir {claim.output_dir} is not writable: {e.strerror} ({path})") from None
        except OSError as e:
            raise ConfigError(f"output_dir {claim.output_dir} is not writable: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise ConfigError(f"output_dir {claim.output_dir}: cannot lock {path}: {e.strerror}") from None
            raise ConfigError(f"output_dir {claim.output_dir} is in use by another run (pid {holder}); "
                              "wait for it to finish, stop it, or pick another --output_dir") from None
        # Between our open and our flock the holder may have finished and unlinked the file (and a third
        # run created a new one): the lock only counts if the path still names the inode we locked.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        previous = b"" if created else os.pread(fd, 1 << 16, 0)
        if previous.strip():
            log(f"output_dir {claim.output_dir}: taking over the lock of pid {previous.decode('ascii', 'replace').strip()}, which is gone")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        claim.fd, claim.lock_created, claim.lock_previous = fd, created, previous
        return
    raise ConfigError(f"output_dir {claim.output_dir}: could not lock {path} (it keeps being replaced)")


def _check_writable(out):
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"output_dir {out} is not writable: {e.strerror}") from None


def claim_output_dir(config):
    """Rank 0: lock output_dir for this run (creating it if needed), then check it is writable and that
    a new run may use it (check_output_dir). A second run on the same output_dir fails at once naming
    the holder's pid; a lock whose holder died is taken over. Nothing else is touched: a refusal here,
    or release_output_dir(claim, keep=False) later, leaves output_dir as it was. Other ranks: a no-op
    (a node's writer without a shared disk claims its own copy later: claim_node_output_dir)."""
    claim = OutputDirClaim(os.path.abspath(config["output_dir"]))
    if is_main_process():
        _take_claim(claim, config)
    return claim


def _take_claim(claim, config):
    try:
        claim.created_dirs = _make_dirs(config["output_dir"])
        _take_lock(claim)
        _check_writable(claim.output_dir)
        check_output_dir(config)
    except BaseException:
        release_output_dir(claim, keep=False)
        raise


def claim_node_output_dir(config):
    """A node's writer, when its node does not see rank 0's output_dir (multinode.py): claim this node's own
    copy as rank 0 claimed its own (lock, writable, may be used), into the run's claims, so that the run's end
    releases it, or undoes it for a refused run, the same way."""
    claims = state.current().claims
    path = os.path.abspath(config["output_dir"])
    claim = claims.setdefault(path, OutputDirClaim(path))
    _take_claim(claim, config)


def release_output_dir(claim, keep=False):
    """End the claim. keep=False (the run was refused): remove exactly what the claim created (the lock
    file, or restore its old bytes; directories it made). keep=True: leave the run's files, drop the lock."""
    if claim.fd is not None:
        path = os.path.join(claim.output_dir, LOCK_FILE)
        try:
            ours = os.path.samestat(os.fstat(claim.fd), os.stat(path))
        except OSError:
            ours = False
        try:
            if ours and (keep or claim.lock_created):
                os.remove(path)  # while still locked: a waiting opener sees the inode change and retries
            elif ours:
                os.ftruncate(claim.fd, 0)
                os.pwrite(claim.fd, claim.lock_previous, 0)
        finally:
            os.close(claim.fd)
            claim.fd = None
    if not keep:
        for d in reversed(claim.created_dirs):
            try:
                os.rmdir(d)
            except OSError:
                break  # not empty: something else wrote there, leave it


def claim_run_output_dir(config):
    """The run's claim of output_dir (claim_output_dir), held in the run's state until release_run_claims."""
    claim = claim_output_dir(config)
    state.current().claims[claim.output_dir] = claim
    return claim


def release_run_claims():
    """At the end of a run: release every output_dir it claimed, keeping the run's files only where
    open_output_dir ran (a run refused before that leaves output_dir byte-identical)."""
    claims = state.current().claims
    while claims:
        _, claim = claims.popitem()
        release_output_dir(claim, keep=claim.opened)


def clean_stale_temp_dirs(output_dir):
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".tmp-{CHECKPOINT_PREFIX}") or (checkpoint_step(name.split(".old-")[0]) is not None and ".old-" in name):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith((".tmp-rng-", ".write-test-", SHARING_CHECK_PREFIX)):  # .tmp-rng-: files of older versions
            os.remove(path)


def open_output_dir(config, staged=None):
    """Once every check has passed: clear a previous run's files (overwrite_output_dir, not resuming),
    create output_dir, drop half-written temp dirs, save the config, and move in the files of `staged`
    (a directory written during the checks, e.g. a vocab), which is then removed.

    Bad data stops a run before this, so a fixed rerun is not refused as a non-empty output_dir.
    """
    out = config["output_dir"]
    if not writes_output():
        return
    previous = _previous_run_files(out)
    if previous and config.get("overwrite_output_dir") and not config.get("resume_from_checkpoint"):
        log(f"overwrite_output_dir=True: clearing previous run files in {out}")
        for name in previous:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
    os.makedirs(out, exist_ok=True)
    clean_stale_temp_dirs(out)
    save_config(config, out)
    if staged:
        for name in os.listdir(staged):
            shutil.move(os.path.join(staged, name), os.path.join(out, name))
        shutil.rmtree(staged, ignore_errors=True)
    attach_run_log(out)  # what the console showed so far, and from now on, goes to output_dir/run.log
    claim = state.current().claims.get(os.path.abspath(out))
    if claim is not None:
        claim.opened = True
