"""Saving a checkpoint (atomic: written into a temp dir, fsynced, the manifest last, renamed into place) and
reading one back: every file read and validated into memory, then applied to the model, optimizer,
scheduler and scaler.

Imports: the standard library and numpy; safetensors inside; of the project `errors`, `checkpoints.files`,
`checkpoints.optimizer_state`, `models.weights`, `reporting` and `runtime.rng`.
"""
import dataclasses
import hashlib
import json
import math
import os
import shutil
from typing import Any, Dict

import numpy as np

from paddle_finetune.checkpoints.files import (
    CHECKPOINT_PREFIX,
    COMPLETE_MARKER,
    FORMAT,
    MAX_STEP,
    MAX_WORLD_SIZE,
    OLD_FORMAT_FILES,
    OPTIMIZER_FILE,
    OPTIMIZER_META_FILE,
    PICKLED_WEIGHTS_FILE,
    RANK_RNG_FILE,
    SAFE_WEIGHTS_INDEX,
    TRAIN_CONFIG_FILE,
    TRAINER_STATE_FILE,
    file_digest,
    _dir_reader,
    _fsync_dir,
    _json_bytes,
    _read_manifest,
    _one_line,
    _Reader,
    _relative_files,
    _write_bytes,
    best_checkpoint_name,
    checkpoint_step,
    is_count,
    open_regular,
)
from paddle_finetune.checkpoints.optimizer_state import (
    apply_optimizer_state,
    optimizer_state,
)
from paddle_finetune.errors import CheckpointError
from paddle_finetune.models.weights import (
    apply_model_weights,
    read_model_weights,
    unwrap_model,
)
from paddle_finetune.reporting.files import write_json_atomic
from paddle_finetune.runtime.rng import (
    get_rng_state,
    rng_state_from_json,
    rng_state_to_json,
)
from paddle_finetune.runtime.state import note_write


def save_config(config, output_dir, name=TRAIN_CONFIG_FILE):
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, name), config)



def save_model_files(model, tokenizer, directory, extra_files=None):
    """The one place a model is unwrapped and saved: checkpoints and final exports both use it."""
    note_write(directory, "dir")
    os.makedirs(directory, exist_ok=True)
    unwrap_model(model).save_pretrained(directory, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for name, content in (extra_files or {}).items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2))


def _jsonable_config(config):
    # The form a config has after its trip through train_config.json (tuples -> lists, odd values -> str).
    return json.loads(json.dumps(config, default=str))


def normalize_train_state(train_state):
    """The train state as saved: best_checkpoint as a name relative to output_dir, and its step."""
    state = dict(train_state)
    state["best_checkpoint"] = best_checkpoint_name(state.get("best_checkpoint"))
    state["best_step"] = checkpoint_step(state["best_checkpoint"]) if state["best_checkpoint"] else None
    return state


def _scaler_state(scaler):
    state = scaler.state_dict() if scaler is not None else {}
    if state:  # the loss scale is a 1-element float32 array: a float holds it exactly
        state = {**state, "scale": float(np.asarray(state["scale"]).reshape(-1)[0])}
    return state or None


def save_checkpoint(output_dir, step, model, tokenizer, optimizer, lr_scheduler, scaler, train_state, config,
                    extra_files=None, rng_states=None, data_fingerprint=None):
    """Atomic: a crash at any point leaves either the old checkpoint set or the new one complete.

    Files are written into a temp dir and fsynced, the manifest (size and sha256 of each) last, then
    the dir is renamed into place. rng_states: every rank's RNG state (rng_state_to_json), rank 0's
    first, as distributed.all_gather returns them; None = this process's own (one process). Every
    writer (rank 0, and each node's with save_on_each_node) writes all of them, so its checkpoint is
    complete on its own disk and equal to the others'.
    """
    from safetensors.numpy import save_file

    rng_states = [rng_state_to_json(get_rng_state())] if rng_states is None else rng_states
    world_size = len(rng_states)
    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    note_write(final, "dir")  # recorded before it exists: a crash never leaves a checkpoint the run cannot prove is its own
    save_model_files(model, tokenizer, tmp, extra_files)
    arrays, meta = optimizer_state(optimizer, model)
    save_file(arrays, os.path.join(tmp, OPTIMIZER_FILE))  # straight to disk: no second copy in memory (fsynced below)
    _write_bytes(os.path.join(tmp, OPTIMIZER_META_FILE), _json_bytes(meta))
    _write_bytes(os.path.join(tmp, TRAINER_STATE_FILE), _json_bytes({
        "format": FORMAT,
        "step": step,
        "train_state": normalize_train_state(train_state),
        "lr_scheduler": lr_scheduler.state_dict(),
        "scaler": _scaler_state(scaler),
        "rng": rng_states[0],
        "world_size": world_size,
        "data_fingerprint": data_fingerprint,
    }))
    _write_bytes(os.path.join(tmp, TRAIN_CONFIG_FILE), _json_bytes(_jsonable_config(config)))
    for rank in range(1, world_size):
        _write_bytes(os.path.join(tmp, RANK_RNG_FILE.format(rank=rank)), _json_bytes({"format": FORMAT, "rank": rank, "rng": rng_states[rank]}))
    files = {}
    for name in sorted(_relative_files(tmp)):
        path = os.path.join(tmp, name)
        files[name] = file_digest(path)
        with open_regular(path) as f:  # save_pretrained and the tokenizer do not fsync
            os.fsync(f.fileno())
    _write_bytes(os.path.join(tmp, COMPLETE_MARKER), _json_bytes({"format": FORMAT, "step": step, "files": files}))
    _fsync_dir(tmp)
    if os.path.exists(final):
        # Re-saving the same step (e.g. a signal right after a save): swap, never leave a gap.
        old = final + f".old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(output_dir)
    return final


def write_run_state(output_dir, train_state):
    """output_dir/trainer_state.json: the step and the best checkpoint by name (with best_step,
    best_metric, metric_for_best), so the directory can move and still resolve it."""
    write_json_atomic(os.path.join(output_dir, TRAINER_STATE_FILE), normalize_train_state(train_state))


# ----------------------------------------------------------------------------
# reading and applying
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class CheckpointContents:
    """Every file of a checkpoint, read and validated; usable where a path is expected (os.fspath, str)."""

    path: str
    step: int
    weights: Dict[str, Any]
    weights_source: str
    optimizer: Dict[str, Any]
    optimizer_meta: Dict[str, Any]
    trainer_state: Dict[str, Any]  # the JSON as saved; "rng" still in its JSON form
    rng: Dict[str, Any]  # rank 0's RNG state, ready for rng.set_rng_state
    rank_rng: Dict[int, Any]  # ranks > 0
    config: Dict[str, Any]  # train_config.json
    files: Dict[str, Any] = dataclasses.field(default_factory=dict)  # the manifest: name -> {size, sha256}

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    @property
    def train_state(self):
        return normalize_train_state(self.trainer_state.get("train_state") or {})


def _old_format_error(path):
    return CheckpointError(
        f"{path} is in the old pickled format ({', '.join(OLD_FORMAT_FILES)}), which is never unpickled on resume "
        "because a crafted pickle runs code; continue from its weights with "
        f"--pretrained_model={path} (a new run, not an exact resume), or resume it with the previous version"
    )


def _number_or_none(value):
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value))


def _count_or_none(value, limit=MAX_STEP):
    return value is None or is_count(value, limit)


def check_trainer_state(where, state, step):
    """The ranges of a checkpoint's trainer_state.json: the step it says agrees with the manifest and the train
    state, every count is a whole number in range, every metric finite. CheckpointError names what is wrong."""
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("train_state"), dict) \
            or not isinstance(state.get("lr_scheduler"), dict):
        raise CheckpointError(f"{where}: not a format {FORMAT} trainer state")
    if not is_count(state.get("step"), MAX_STEP):
        raise CheckpointError(f"{where}: step {state.get('step')!r} is not a whole number from 0 to {MAX_STEP}")
    if step is not None and state["step"] != step:
        raise CheckpointError(f"{where}: step {state['step']}, but {COMPLETE_MARKER} says step {step}")
    world_size = state.get("world_size")
    if type(world_size) is not int or not 1 <= world_size <= MAX_WORLD_SIZE:
        raise CheckpointError(f"{where}: world_size {world_size!r} is not a whole number from 1 to {MAX_WORLD_SIZE}")
    train = state["train_state"]
    problems = []
    if train.get("global_step", state["step"]) != state["step"] or not is_count(train.get("global_step", 0), MAX_STEP):
        problems.append(f"global_step {train.get('global_step')!r} differs from step {state['step']}")
    for key in ("epoch", "position", "evals_without_improvement", "amp_skipped_in_a_row"):
        if not is_count(train.get(key, 0), MAX_STEP):
            problems.append(f"{key} {train.get(key)!r} is not a whole number from 0 to {MAX_STEP}")
    for key in ("best_step", "stopped_early_at", "final_model_step"):
        if not _count_or_none(train.get(key)) or (train.get(key) is not None and train[key] > state["step"]):
            problems.append(f"{key} {train.get(key)!r} is not a step from 0 to {state['step']}")
    if train.get("world_size", world_size) != world_size:
        problems.append(f"train_state world_size {train.get('world_size')!r} differs from world_size {world_size}")
    if not _number_or_none(train.get("best_metric")):
        problems.append(f"best_metric {train.get('best_metric')!r} is not a finite number")
    for key in ("best_checkpoint", "metric_for_best", "wandb_run_id"):
        if train.get(key) is not None and not isinstance(train[key], str):
            problems.append(f"{key} {train[key]!r} is not a name")
    best = train.get("best_checkpoint")
    if isinstance(best, str) and best and checkpoint_step(best_checkpoint_name(best)) is None:
        problems.append(f"best_checkpoint {best!r} is not a checkpoint-<step> name")
    for key, value in state["lr_scheduler"].items():
        if not isinstance(key, str) or not (_number_or_none(value) or isinstance(value, (str, bool))):
            problems.append(f"lr_scheduler {key!r} holds {value!r}")
    scaler = state.get("scaler")
    if scaler is not None and (not isinstance(scaler, dict) or not all(_number_or_none(v) or isinstance(v, bool) for v in scaler.values())
                               or not (isinstance(scaler.get("scale"), (int, float)) and scaler["scale"] > 0)):
        problems.append(f"scaler {scaler!r} is not a loss-scaler state")
    if state.get("data_fingerprint") is not None and not isinstance(state["data_fingerprint"], str):
        problems.append("data_fingerprint is not text")
    if problems:
        raise CheckpointError(f"{where}: {problems[0]}")


def read_checkpoint(path):
    """Read and validate every file of a checkpoint into memory, or raise CheckpointError naming the
    file and what is wrong (missing, truncated, corrupted, bad JSON, incomplete marker, old format, a name that
    disagrees with the step it holds, values out of range, a file that is not a regular file)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.path.lexists(os.path.join(path, COMPLETE_MARKER)):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER})")
    try:
        return _read_checkpoint(path)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError, RecursionError) as e:
        raise CheckpointError(f"{path}: damaged ({_one_line(e)})") from None


def _read_checkpoint(path):
    manifest = _read_manifest(path)
    if manifest.get("format") == 1:
        raise _old_format_error(path)
    marker = os.path.join(path, COMPLETE_MARKER)
    named = checkpoint_step(os.path.basename(os.path.normpath(path)))
    if manifest.get("step") is None:
        raise CheckpointError(f"{marker}: no step recorded")
    if named is not None and named != manifest["step"]:
        raise CheckpointError(f"{path}: its name says step {named}, its {COMPLETE_MARKER} says step {manifest['step']} "
                              "(renamed?)")
    reader = _Reader(path, manifest)
    state_where = os.path.join(path, TRAINER_STATE_FILE)
    state = reader.json(TRAINER_STATE_FILE)  # first: small, and it says how many rank files there are
    check_trainer_state(state_where, state, manifest["step"])
    weights, weights_source = read_model_weights(path, reader)
    try:
        rng = rng_state_from_json(state.get("rng"))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise CheckpointError(f"{state_where}: {e}") from None
    rank_rng = {}
    for rank in range(1, state["world_size"]):
        name = RANK_RNG_FILE.format(rank=rank)
        data = reader.json(name)
        try:
            rank_rng[rank] = rng_state_from_json(data.get("rng") if isinstance(data, dict) else None)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{os.path.join(path, name)}: {e}") from None
    meta = reader.json(OPTIMIZER_META_FILE)
    if not isinstance(meta, dict) or not isinstance(meta.get("dtypes"), dict):
        raise CheckpointError(f"{os.path.join(path, OPTIMIZER_META_FILE)}: no dtypes")
    optimizer = reader.safetensors(OPTIMIZER_FILE)
    if set(optimizer) != set(meta["dtypes"]):
        raise CheckpointError(f"{os.path.join(path, OPTIMIZER_FILE)}: tensors differ from those {OPTIMIZER_META_FILE} lists")
    config = reader.json(TRAIN_CONFIG_FILE)
    if not isinstance(config, dict):
        raise CheckpointError(f"{os.path.join(path, TRAIN_CONFIG_FILE)}: not a config object")
    for name in sorted(set(manifest["files"]) - reader.seen):  # the rest (tokenizer, config.json, ...) intact too
        reader.read(name)
    return CheckpointContents(path=path, step=state["step"], weights=weights,
                              weights_source=weights_source, optimizer=optimizer, optimizer_meta=meta,
                              trainer_state=state, rng=rng, rank_rng=rank_rng, config=config, files=manifest["files"])


def training_state_digest(contents):
    """sha256 over the step and the recorded digests of the weights and the optimizer state: equal on two nodes
    exactly when their copies of a checkpoint resume the same training (tokenizer files and RNG aside)."""
    h = hashlib.sha256(f"step {contents.step}\n".encode())
    for name in sorted(contents.files):
        if name.endswith(".safetensors") or name in (SAFE_WEIGHTS_INDEX, PICKLED_WEIGHTS_FILE, OPTIMIZER_META_FILE):
            h.update(f"{name} {json.dumps(contents.files[name], sort_keys=True)}\n".encode())
    return h.hexdigest()


def _contents(checkpoint):
    return checkpoint if isinstance(checkpoint, CheckpointContents) else read_checkpoint(os.fspath(checkpoint))


def load_checkpoint(checkpoint, model, optimizer, lr_scheduler, scaler):
    """Apply a checkpoint (a path, or read_checkpoint's contents) to the model, optimizer, scheduler and
    scaler. Returns {"train_state", "rng" (rank 0's, for rng.set_rng_state), "world_size", "data_fingerprint"}."""
    contents = _contents(checkpoint)
    apply_model_weights(model, contents.weights, contents.weights_source)
    apply_optimizer_state(optimizer, model, contents.optimizer, contents.optimizer_meta, os.path.join(contents.path, OPTIMIZER_FILE))
    state = contents.trainer_state
    lr_scheduler.set_state_dict(state["lr_scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict({**state["scaler"], "scale": np.array([state["scaler"]["scale"]], dtype=np.float32)})
    return {"train_state": contents.train_state, "rng": contents.rng, "world_size": state["world_size"],
            "data_fingerprint": state.get("data_fingerprint")}


def load_rank_rng(checkpoint, rank, default):
    """Rank r's own RNG state when the checkpoint has one (data parallel), else `default` (rank 0's)."""
    if rank == 0:
        return default
    if isinstance(checkpoint, CheckpointContents):
        return checkpoint.rank_rng.get(rank, default)
    path = os.path.join(os.fspath(checkpoint), RANK_RNG_FILE.format(rank=rank))
    if not os.path.isfile(path):
        return default
    reader = _dir_reader(os.fspath(checkpoint))
    try:
        return rng_state_from_json(reader.json(RANK_RNG_FILE.format(rank=rank)).get("rng"))
    except (ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------
# listing, rotation, the best checkpoint
# ----------------------------------------------------------------------------


def export_final_model(model, tokenizer, output_dir, extra_files=None):
    """The kept model at the root of output_dir (HF/PaddleNLP convention: from_pretrained(output_dir) loads it).
    Written next to it first, then moved in file by file, so a crash never leaves half a file; the temp dir goes
    whatever happens (and a kill's leftover at the next start: ownership's transient names)."""
    tmp = os.path.join(output_dir, f".tmp-final-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_model_files(model, tokenizer, tmp, extra_files)
        for name in sorted(os.listdir(tmp)):
            note_write(os.path.join(output_dir, name), "dir" if os.path.isdir(os.path.join(tmp, name)) else "file")
            os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
