"""The output directory: one run at a time (an flock held for the run), and the one rule of ownership
(checkpoints.ownership): a run writes only into an empty directory or one that runs of this toolkit wrote, and
removes (overwrite_output_dir) exactly what earlier runs recorded there. Every check runs before anything is
touched; on nodes without a shared disk each node's writer claims its own copy the same way (runtime.multinode
decides who).

Refused, with one line and nothing touched, when output_dir
  * is the filesystem root, the home directory, the current directory, the project, or a folder holding one;
  * is, holds or is inside an input of the run (data files, a dataset folder, pretrained_model, the converted model,
    the built-in sample data, a checkpoint resumed from another output_dir);
  * holds files no run of this toolkit wrote (listed by name);
  * holds an earlier run's files and the run neither resumes it nor has overwrite_output_dir;
  * holds an earlier run's files and the run resumes a checkpoint of another output_dir, without overwrite_output_dir.

Imports: the standard library; of the project `errors`, `paths`, `checkpoints.files`, `checkpoints.ownership`,
`checkpoints.storage`, `reporting` and `runtime`.
"""
import dataclasses
import errno
import os
import shutil
import tempfile
from typing import List, Optional

from paddle_finetune.checkpoints.files import LOCK_FILE
from paddle_finetune.checkpoints.ownership import (
    RunRecorder,
    begin_run_record,
    clean_transient,
    describe_names,
    inventory,
    new_run_id,
    overlap,
    protected_reason,
    real,
    remove_owned,
)
from paddle_finetune.checkpoints.storage import save_config
from paddle_finetune.errors import ConfigError
from paddle_finetune.paths import DATASETS_DIR
from paddle_finetune.reporting.console import attach_run_log, log
from paddle_finetune.runtime import state
from paddle_finetune.runtime.distributed import is_main_process, writes_output
from paddle_finetune.runtime.state import note_write


def _is_local_path(value):
    return isinstance(value, str) and bool(value) and (value.startswith((".", "/", "~")) or os.sep in value
                                                       or os.path.exists(os.path.expanduser(value)))


def resumes_in_place(config):
    """The run continues output_dir's own run: resume_from_checkpoint is "auto", or a checkpoint inside output_dir."""
    if not config.get("do_train", True):
        return False
    value = config.get("resume_from_checkpoint")
    if value == "auto":
        return True
    return bool(value) and real(os.path.dirname(os.path.normpath(os.path.expanduser(value)))) == real(config["output_dir"])


def run_inputs(config):
    """(label, path) of every input of the run on disk, which output_dir must neither be, hold, nor be inside."""
    inputs = [(key, config[key]) for key in ("train_file", "dev_file", "test_file") if _is_local_path(config.get(key))]
    if _is_local_path(config.get("dataset_name")) and os.path.exists(os.path.expanduser(config["dataset_name"])):
        inputs.append(("dataset_name", config["dataset_name"]))
    for key in ("pretrained_model", "converted_model_dir"):
        if _is_local_path(config.get(key)):
            inputs.append((key, config[key]))
    resume = config.get("resume_from_checkpoint")
    if resume and resume != "auto" and config.get("do_train", True) and not resumes_in_place(config):
        inputs.append(("resume_from_checkpoint", resume))
    inputs.append(("paddle-finetune's built-in sample data", DATASETS_DIR))
    return inputs


def _check_place(out, config):
    reason = protected_reason(out)
    if reason:
        shown = out if real(out) == out else f"{out} ({real(out)})"
        raise ConfigError(f"output_dir {shown} is {reason}; nothing was changed. Give the run a folder of its own, "
                          "e.g. --output_dir=output/my_run")
    for label, path in run_inputs(config):
        how = overlap(out, path)
        if how:
            raise ConfigError(f"output_dir {out} {how} {label} {path}, an input of this run; nothing was changed. "
                              "Pick another --output_dir")


def check_output_dir(config):
    """Refuse an output_dir the run may not write (see the module docstring); only checks, touches nothing.
    overwrite_output_dir removes the earlier run's files in open_output_dir, once every check has passed."""
    out = config["output_dir"]
    _check_place(out, config)
    try:
        inv = inventory(out)
    except ConfigError as e:
        raise ConfigError(f"output_dir {out}: {e}; so nothing in it can be proven to be an earlier run's, and nothing "
                          "was changed. Pick another --output_dir") from None
    if inv.foreign:
        raise ConfigError(f"output_dir {out} holds files no paddle-finetune run wrote ({inv.shown_foreign()}); nothing "
                          "was changed. Pick another --output_dir, or move those files out of it")
    if inv.empty or resumes_in_place(config):
        return
    names = describe_names(inv.owned)
    resume = config.get("resume_from_checkpoint") if config.get("do_train", True) else None
    if config.get("overwrite_output_dir"):
        return
    if resume:
        raise ConfigError(
            f"output_dir {out} holds an earlier run's files ({names}); resuming {resume}, a checkpoint of another "
            "output_dir, there would mix two runs; nothing was changed. Pick an empty --output_dir, or pass "
            "--overwrite_output_dir=True to remove that earlier run's files first (only the files runs recorded there)")
    raise ConfigError(
        f"output_dir {out} is not empty ({names}); nothing was changed. Resume with --resume_from_checkpoint=auto, "
        "pick another --output_dir, or pass --overwrite_output_dir=True to replace the earlier run's files (only the "
        "files runs recorded there are removed)"
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
    check_output_dir(config)  # before anything is created: a refused output_dir is not touched at all
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


def clean_stale_temp_dirs(output_dir, owned=()):
    """Remove the leftovers of interrupted writes (checkpoints.ownership.clean_transient): only call it on an
    output_dir that is ours (open_output_dir, after the checks)."""
    return clean_transient(output_dir, owned)


def _tool(command):
    return (command or "").split(" ")[0] or "paddle-finetune"


def open_output_dir(config, staged=None):
    """Once every check has passed: remove an earlier run's recorded files (overwrite_output_dir, not resuming in
    place), create output_dir, drop the leftovers of interrupted writes, record the run (adopting an earlier
    version's output_dir), and from now on record every file the run writes there before it is written
    (runtime.state.note_write); then save the config and move in the files of `staged` (a directory written during
    the checks, e.g. a vocab), which is then removed.

    Bad data stops a run before this, so a fixed rerun is not refused as a non-empty output_dir.
    """
    out = config["output_dir"]
    if not writes_output():
        return
    inv = inventory(out)
    if inv.foreign:  # appeared since the checks: still nothing is touched
        raise ConfigError(f"output_dir {out} holds files no paddle-finetune run wrote ({inv.shown_foreign()}); nothing "
                          "was changed. Pick another --output_dir, or move those files out of it")
    in_place = resumes_in_place(config)
    removed = []
    if config.get("overwrite_output_dir") and not in_place and inv.owned:
        removed = remove_owned(inv)
        log(f"overwrite_output_dir=True: removed the earlier run's files in {out}: {describe_names(removed)} "
            "(only what runs recorded there)")
    elif config.get("overwrite_output_dir") and in_place and inv.owned:
        log(f"overwrite_output_dir=True is ignored: resuming the run in {out} (resume_from_checkpoint="
            f"{config.get('resume_from_checkpoint')})")
    os.makedirs(out, exist_ok=True)
    clean_stale_temp_dirs(out, inv.owned)
    current = state.current()
    run_id, tool = new_run_id(), _tool(current.command)
    resume = config.get("resume_from_checkpoint") if config.get("do_train", True) else None
    begin_run_record(out, tool, run_id, adopted=[(n, k) for n, k in inv.owned.items() if n not in removed] if inv.legacy else (),
                     resumed_from=real(resume) if resume and resume != "auto" else None, removed=removed)
    if inv.legacy and not removed:
        log(f"output_dir {out} was written by an earlier version (no record of its files): adopted "
            f"{describe_names(inv.owned)} as that run's")
    current.on_write = RunRecorder(out, tool, run_id)
    save_config(config, out)
    if staged:
        for name in os.listdir(staged):
            note_write(os.path.join(out, name), "dir" if os.path.isdir(os.path.join(staged, name)) else "file")
            shutil.move(os.path.join(staged, name), os.path.join(out, name))
        shutil.rmtree(staged, ignore_errors=True)
    attach_run_log(out)  # what the console showed so far, and from now on, goes to output_dir/run.log
    if resume and resume != "auto" and not in_place:
        log(f"resuming {real(resume)}, a checkpoint of another output_dir; this run's files go to {out}")
    claim = current.claims.get(os.path.abspath(out))
    if claim is not None:
        claim.opened = True
