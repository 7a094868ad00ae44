"""Issue #13: one run per output_dir (an flock held for the whole run), unwritable output_dirs found up
front, and a refused run leaving output_dir byte-identical; overwrite clears only once checks passed."""
import os
import signal
import subprocess
import sys
import time

import pytest

from paddle_finetune.checkpoints.files import LOCK_FILE
from paddle_finetune.checkpoints.output_dir import claim_output_dir, open_output_dir, release_output_dir
from paddle_finetune.checkpoints.ownership import MANIFEST_FILE
from paddle_finetune.errors import ConfigError
from paddle_finetune.training.session import Run

CLAIM_AND_SLEEP = """
import sys, time
from paddle_finetune.checkpoints.output_dir import claim_output_dir
claim = claim_output_dir({{"output_dir": {out!r}}})
print("claimed", flush=True)
time.sleep(60)
"""


def claim_in_another_process(out):
    proc = subprocess.Popen([sys.executable, "-c", CLAIM_AND_SLEEP.format(out=str(out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "claimed", proc.stderr.read()
    return proc


def snapshot(directory):
    return {os.path.relpath(os.path.join(d, f), directory): open(os.path.join(d, f), "rb").read()
            for d, _, files in os.walk(directory) for f in files}


def test_a_second_run_on_the_same_output_dir_fails_at_once_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    holder = claim_in_another_process(out)
    try:
        started = time.time()
        with pytest.raises(ConfigError) as e:
            claim_output_dir({"output_dir": str(out)})
        assert time.time() - started < 2
        assert str(e.value) == (f"output_dir {out.resolve()} is in use by another run (pid {holder.pid}); "
                                "wait for it to finish, stop it, or pick another --output_dir")
        assert (out / LOCK_FILE).read_text().strip() == str(holder.pid), "the refused run leaves the lock alone"
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_taken_over(tmp_path, capsys):
    out = tmp_path / "out"
    holder = claim_in_another_process(out)
    holder.send_signal(signal.SIGKILL)  # no cleanup runs: the lock file stays, the flock goes with the process
    holder.wait()
    assert (out / LOCK_FILE).read_text().strip() == str(holder.pid)
    claim = claim_output_dir({"output_dir": str(out)})
    try:
        assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
        assert f"taking over the lock of pid {holder.pid}" in capsys.readouterr().out
    finally:
        release_output_dir(claim, keep=True)
    assert not (out / LOCK_FILE).exists(), "a finished run leaves no lock behind"


def test_the_lock_counts_only_if_the_path_still_names_the_locked_file(tmp_path, monkeypatch):
    """The unlink race: the holder finishes (unlinks .lock) and a third run creates a new one between our
    open and our flock. Locking the orphaned inode would let two runs in; the claim must retry."""
    import fcntl

    out = tmp_path / "out"
    out.mkdir()
    lock = out / LOCK_FILE
    lock.write_text("111\n")
    real_flock, calls = fcntl.flock, []

    def flock_after_the_holder_left(fd, op):
        calls.append(fd)
        if len(calls) == 1:
            os.remove(lock)
            lock.write_text("222\n")  # someone else's fresh lock file, same path, new inode
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_holder_left)
    claim = claim_output_dir({"output_dir": str(out)})
    try:
        assert len(calls) == 2
        assert os.path.samestat(os.fstat(claim.fd), os.stat(lock))
        assert lock.read_text().strip() == str(os.getpid())
    finally:
        release_output_dir(claim, keep=True)


def test_unwritable_output_dir_is_found_up_front(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=f"output_dir {blocker}/out: {blocker} exists and is not a directory"):
        claim_output_dir({"output_dir": str(blocker / "out")})
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        claim_output_dir({"output_dir": str(blocker)})
    assert blocker.read_text() == "x"


CLAIM_AS = """
import fcntl, os, sys
from paddle_finetune.checkpoints.output_dir import claim_output_dir
from paddle_finetune.errors import ConfigError
if os.geteuid() == 0:  # imports done as root (the interpreter lives under /root), the claim as nobody
    os.setgid(65534)
    os.setuid(65534)
try:
    claim_output_dir({{"output_dir": {out!r}}})
except ConfigError as e:
    print(e)
"""


def claim_as_nobody(out):
    """Root ignores permission bits, so the read-only case claims as `nobody` in a child process."""
    result = subprocess.run([sys.executable, "-c", CLAIM_AS.format(out=str(out))], capture_output=True,
                            text=True, timeout=120)
    return result.stdout.strip() or result.stderr[-2000:]


def test_read_only_output_dir_is_refused_in_one_line():
    import tempfile

    base = tempfile.mkdtemp(prefix="ckpt-ro-")  # under /tmp: reachable by an unprivileged child
    existing = os.path.join(base, "existing")
    os.mkdir(existing)
    mode = 0o755 if os.geteuid() == 0 else 0o555  # not writable by the claiming process either way
    try:
        os.chmod(existing, mode)
        os.chmod(base, mode)
        assert claim_as_nobody(os.path.join(base, "new", "out")) == \
            f"output_dir {base}/new/out cannot be created: Permission denied ({base}/new)"
        assert claim_as_nobody(os.path.join(base, "existing")) == \
            f"output_dir {base}/existing is not writable: Permission denied"
        assert sorted(os.listdir(base)) == ["existing"] and os.listdir(os.path.join(base, "existing")) == []
    finally:
        import shutil

        os.chmod(base, 0o700)
        os.chmod(existing, 0o700)
        shutil.rmtree(base)


def test_a_refused_run_leaves_output_dir_byte_identical(tmp_path):
    # non-empty, with a stale lock from a killed run: refused, and even the stale lock's bytes survive
    out = tmp_path / "used"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "model.safetensors").write_bytes(b"weights")
    (out / "train_log.jsonl").write_text('{"step": 1}\n')
    (out / LOCK_FILE).write_text("99999999\n")
    before = snapshot(out)
    with pytest.raises(ConfigError, match="nothing was changed"):
        claim_output_dir({"output_dir": str(out)})
    assert snapshot(out) == before
    (out / "train_config.json").write_text("{}")  # now an earlier run's output_dir (of the previous version)
    (out / "checkpoint-2" / "CHECKPOINT_COMPLETE").write_text("{}")
    before = snapshot(out)
    with pytest.raises(ConfigError, match="is not empty .*nothing was changed"):
        claim_output_dir({"output_dir": str(out)})
    assert snapshot(out) == before
    # a new output_dir (and parents) created by the claim is removed again when the run is refused later
    fresh = tmp_path / "a" / "b" / "out"
    with pytest.raises(RuntimeError, match="bad data"):
        with Run({"output_dir": str(fresh)}):
            assert (fresh / LOCK_FILE).exists()
            raise RuntimeError("bad data")
    assert not (tmp_path / "a").exists()
    # an existing empty output_dir stays, empty
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RuntimeError):
        with Run({"output_dir": str(empty)}):
            raise RuntimeError("refused")
    assert os.listdir(empty) == []


def test_overwrite_deletes_nothing_until_open_output_dir(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "CHECKPOINT_COMPLETE").write_text("{}")
    (out / "train_config.json").write_text("{}")
    (out / "train_log.jsonl").write_text("old\n")
    (out / "wandb").mkdir()
    config = {"output_dir": str(out), "overwrite_output_dir": True}
    before = snapshot(out)
    with pytest.raises(RuntimeError):
        with Run(config):
            raise RuntimeError("refused after the claim")
    assert snapshot(out) == before, "overwrite_output_dir must not delete anything before every check passed"

    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "vocab.txt").write_text("[PAD]\n")
    with Run(config) as run:
        open_output_dir(config, staged=str(staged))
        assert run.state.claims[str(out)].opened
        # the earlier run's files (wandb/ too) are gone; the new run's are recorded
        assert sorted(os.listdir(out)) == [LOCK_FILE, MANIFEST_FILE, "run.log", "train_config.json", "vocab.txt"]
    assert not staged.exists()
    assert sorted(os.listdir(out)) == [MANIFEST_FILE, "run.log", "train_config.json", "vocab.txt"], "kept after open, lock dropped"


def test_other_ranks_do_not_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    claim = claim_output_dir({"output_dir": str(tmp_path / "out")})
    assert claim.fd is None and not (tmp_path / "out").exists()
    release_output_dir(claim)
