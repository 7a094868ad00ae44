"""Issue #21: a checkpoint fuzzer. Real checkpoints (tiny BART, real optimizer state) are damaged in generated ways:
truncated or flipped files, a FIFO, a symlink out or a folder in place of a file, deep or mistyped JSON (re-hashed
into the manifest, as a forger would), a renamed folder, an inconsistent train state. Whatever the damage, resuming
(auto and an explicit path), listing, rotation and choosing a model either fall back to the older good checkpoint or
fail with one CheckpointError line naming the checkpoint: never another exception, never a hang (bounded by an
alarm), and nothing is removed or changed."""
import json
import os
import shutil
import signal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checkpoint_helpers import save_tiny_checkpoint
from helpers import snapshot
from paddle_finetune.checkpoints.files import COMPLETE_MARKER, TRAINER_STATE_FILE, file_digest
from paddle_finetune.checkpoints.listing import choose_model_dir, good_checkpoints, latest_checkpoint, rotate_checkpoints
from paddle_finetune.checkpoints.resume import resolve_resume
from paddle_finetune.checkpoints.storage import read_checkpoint
from paddle_finetune.errors import CheckpointError, DataError

FILES = ["model.safetensors", "optimizer.safetensors", "optimizer.json", TRAINER_STATE_FILE, "train_config.json",
         "config.json", COMPLETE_MARKER]
JSON_FILES = [TRAINER_STATE_FILE, "optimizer.json", "train_config.json", "config.json"]
TRAIN_STATE_KEYS = ["global_step", "epoch", "position", "best_step", "best_metric", "best_checkpoint", "world_size",
                    "evals_without_improvement", "stopped_early_at"]
ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10, max_value=10),
                       st.sampled_from([10**13, 2**63, -2**63, 1e30, float("nan"), float("inf")]),
                       st.text(max_size=5), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pristine") / "out")
    for step in (2, 4):
        save_tiny_checkpoint(out, step, config={"seed": 42})
    return out


def rehash(checkpoint, name):
    marker = os.path.join(checkpoint, COMPLETE_MARKER)
    manifest = json.load(open(marker))
    manifest["files"][name] = file_digest(os.path.join(checkpoint, name))
    with open(marker, "w") as f:
        json.dump(manifest, f)


def write(path, data):
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


DAMAGES = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(FILES), st.floats(min_value=0, max_value=0.99)),
    st.tuples(st.just("flip"), st.sampled_from(FILES), st.floats(min_value=0, max_value=0.999)),
    st.tuples(st.just("fifo"), st.sampled_from(FILES), st.none()),
    st.tuples(st.just("symlink out"), st.sampled_from(FILES), st.none()),
    st.tuples(st.just("directory"), st.sampled_from(FILES), st.none()),
    st.tuples(st.just("deep json"), st.sampled_from(JSON_FILES + [COMPLETE_MARKER]), st.integers(min_value=65, max_value=20000)),
    st.tuples(st.just("mistyped state"), st.sampled_from(["step", "world_size", "format", "lr_scheduler", "rng", "scaler",
                                                          "train_state", "data_fingerprint"]), ODD_VALUES),
    st.tuples(st.just("inconsistent train state"), st.sampled_from(TRAIN_STATE_KEYS), ODD_VALUES),
    st.tuples(st.just("json of another type"), st.sampled_from(JSON_FILES), st.sampled_from(["[]", "1", '"x"', "null"])),
    st.tuples(st.just("rename"), st.just(None), st.sampled_from([3, 5, 40, 10**20, 999999999999999999999])),
)


def damage(checkpoint, kind, name, arg, outside):
    """Damage one checkpoint; returns its path afterwards (a rename moves it)."""
    path = os.path.join(checkpoint, name) if name else None
    if kind == "truncate":
        data = open(path, "rb").read()
        write(path, data[: int(len(data) * arg)])
    elif kind == "flip":
        data = bytearray(open(path, "rb").read())
        data[int(len(data) * arg)] ^= 0x5A
        write(path, bytes(data))
    elif kind == "fifo":
        os.remove(path)
        os.mkfifo(path)
    elif kind == "symlink out":
        target = os.path.join(outside, name)
        shutil.copy(path, target)  # the very same bytes, elsewhere: still not the checkpoint's own file
        os.remove(path)
        os.symlink(target, path)
    elif kind == "directory":
        os.remove(path)
        os.mkdir(path)
    elif kind == "deep json":
        write(path, "[" * arg + "]" * arg)
        if name != COMPLETE_MARKER:
            rehash(checkpoint, name)
    elif kind in ("mistyped state", "inconsistent train state"):
        state_path = os.path.join(checkpoint, TRAINER_STATE_FILE)
        state = json.load(open(state_path))
        if kind == "mistyped state":
            state[name] = arg
        else:
            state["train_state"][name] = arg
        write(state_path, json.dumps(state))
        rehash(checkpoint, TRAINER_STATE_FILE)
    elif kind == "json of another type":
        write(path, arg)
        rehash(checkpoint, name)
    elif kind == "rename":
        moved = os.path.join(os.path.dirname(checkpoint), f"checkpoint-{arg}")
        if os.path.exists(moved):  # both renamed to one name: the second keeps its own
            return checkpoint
        os.rename(checkpoint, moved)
        return moved
    return checkpoint


class Hang(Exception):
    pass


def bounded(fn, seconds=60):
    """fn() with an alarm: a read that would block forever (a FIFO) fails the test instead of hanging it."""
    def alarm(signum, frame):
        raise Hang(f"{fn} did not return within {seconds}s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        return fn()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def one_line_or_result(fn):
    """("ok", result) or ("refused", message); any other exception (or a hang) fails."""
    try:
        return "ok", bounded(fn)
    except (CheckpointError, DataError) as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message
        return "refused", message


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=DAMAGES, second=st.one_of(st.none(), DAMAGES))
def test_a_damaged_checkpoint_falls_back_or_is_one_line_and_nothing_is_removed(pristine, tmp_path_factory, first, second):
    root = str(tmp_path_factory.mktemp("fuzz"))
    out, outside = os.path.join(root, "out"), os.path.join(root, "outside")
    shutil.copytree(pristine, out)
    os.mkdir(outside)
    newest = damage(os.path.join(out, "checkpoint-4"), *first, outside)
    older = damage(os.path.join(out, "checkpoint-2"), *second, outside) if second else os.path.join(out, "checkpoint-2")
    before = snapshot(root)

    outcome, value = one_line_or_result(lambda: resolve_resume({"resume_from_checkpoint": "auto", "output_dir": out}))
    if outcome == "ok":
        assert value is not None, "checkpoints are there: auto never starts fresh"
        assert os.path.basename(value.path) in ("checkpoint-2", "checkpoint-4")
        assert value.step == int(os.path.basename(value.path).split("-")[1]), "a checkpoint is what its name says"
    else:
        assert value.startswith("resume_from_checkpoint=auto: no checkpoint in ") or "checkpoint" in value, value
    for path in (newest, older):
        outcome, value = one_line_or_result(lambda: read_checkpoint(path))
        if outcome == "refused":
            assert path in value or os.path.basename(path) in value, value
    one_line_or_result(lambda: choose_model_dir(out))
    bounded(lambda: (good_checkpoints(out), latest_checkpoint(out)))
    assert snapshot(root) == before, "reading checkpoints changed files"
    bounded(lambda: rotate_checkpoints(out, 5, keep=[]))  # nothing beyond the limit: nothing goes
    assert snapshot(root) == before, "rotation removed something"


def test_rotation_removes_only_good_checkpoints_it_may_remove(pristine, tmp_path):
    out = str(tmp_path / "out")
    shutil.copytree(pristine, out)
    for step in (6, 8):
        save_tiny_checkpoint(out, step, config={"seed": 42})
    os.rename(os.path.join(out, "checkpoint-2"), os.path.join(out, "checkpoint-99"))  # renamed: not what it says
    removed = rotate_checkpoints(out, 1, keep=[os.path.join(out, "checkpoint-6")], owned={"checkpoint-4", "checkpoint-6"})
    assert [os.path.basename(p) for p in removed] == ["checkpoint-4"]
    assert sorted(os.listdir(out)) == ["checkpoint-6", "checkpoint-8", "checkpoint-99"]
