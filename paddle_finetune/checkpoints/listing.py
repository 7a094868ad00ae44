"""The checkpoints of an output_dir: listing the complete ones, rotation (never the best or the newest), the
best checkpoint by name (so a moved output_dir still resolves it), and the model directory a prediction
tool loads from an output_dir.

Imports: the standard library; of the project `errors`, `checkpoints.files` and `runtime.state`.
"""
import os
import shutil
import stat

from paddle_finetune.checkpoints.files import (
    COMPLETE_MARKER,
    MAX_STEP,
    PICKLED_WEIGHTS_FILE,
    SAFE_WEIGHTS_FILE,
    SAFE_WEIGHTS_INDEX,
    TRAIN_CONFIG_FILE,
    TRAINER_STATE_FILE,
    _read_manifest,
    best_checkpoint_name,
    checkpoint_step,
    read_json_object,
)
from paddle_finetune.errors import CheckpointError, DataError
from paddle_finetune.runtime.state import note_removed


def _is_real_dir(path):
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _has_marker(path):
    """A CHECKPOINT_COMPLETE of any kind: a damaged one (a folder, a FIFO, a symlink) is the reader's to name."""
    return os.path.lexists(os.path.join(path, COMPLETE_MARKER))


def list_checkpoints(output_dir):
    """Every checkpoint-<step> folder (a real folder, not a symlink) with a CHECKPOINT_COMPLETE, oldest first by
    the step its name says. Half-written ones lack the marker and are invisible; whether a listed one is what its
    name says is the reader's to check (read_checkpoint, or good_checkpoints)."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = checkpoint_step(name)
        path = os.path.join(output_dir, name)
        if step is not None and _is_real_dir(path) and _has_marker(path):
            found.append((step, path))
    return [p for _, p in sorted(found)]


def marker_step(path):
    """The step a checkpoint's CHECKPOINT_COMPLETE records when it agrees with the folder's name, else None."""
    try:
        manifest = _read_manifest(path)
    except CheckpointError:
        return None
    named = checkpoint_step(os.path.basename(os.path.normpath(path)))
    if manifest is not None and manifest.get("format") == 1:  # the old pickled format recorded no step: its name says
        return named if named is not None and named <= MAX_STEP else None
    step = (manifest or {}).get("step")
    return step if type(step) is int and step == named and 0 <= step <= MAX_STEP else None


def good_checkpoints(output_dir):
    """list_checkpoints' folders whose name agrees with the step their manifest records (a renamed or damaged
    marker is left out): the ones rotation, the newest and prediction go by."""
    return [p for p in list_checkpoints(output_dir) if marker_step(p) is not None]


def latest_checkpoint(output_dir):
    ckpts = good_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def resolve_best_checkpoint(output_dir, value):
    """The best checkpoint (a name, or an old absolute path) as a path in the *current* output_dir,
    None when it is not there (rotated away, never saved)."""
    name = best_checkpoint_name(value) if isinstance(value, str) else None
    path = os.path.join(output_dir, name) if name else None
    return path if path and checkpoint_step(name) is not None and _is_real_dir(path) and _has_marker(path) \
        and marker_step(path) is not None else None


def rotate_checkpoints(output_dir, save_total_limit, keep, owned=None):
    """Delete the oldest checkpoints beyond the limit, never one in `keep` (names or paths: the best,
    which may be a step that is not a save step, and the one just saved) nor the newest. Only good checkpoints
    (name and manifest agree) are counted and removed, and with `owned` (names the run may remove: its output_dir's
    ownership record) only those."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    ckpts = good_checkpoints(output_dir)
    protected = {best_checkpoint_name(k) for k in keep if k} | {os.path.basename(p) for p in ckpts[-1:]}
    remaining, removed = list(ckpts), []
    for path in ckpts:  # oldest first
        if len(remaining) <= save_total_limit:
            break
        name = os.path.basename(path)
        if name in protected or (owned is not None and name not in owned):
            continue
        # Drop the marker first: a crash mid-delete must not leave a "complete" torso.
        os.remove(os.path.join(path, COMPLETE_MARKER))
        shutil.rmtree(path, ignore_errors=True)
        note_removed(path)
        remaining.remove(path)
        removed.append(path)
    return removed


def _is_model_dir(path):
    has_config = any(os.path.isfile(os.path.join(path, n)) for n in ("config.json", "model_config.json"))
    return has_config and any(os.path.isfile(os.path.join(path, n)) for n in (SAFE_WEIGHTS_FILE, SAFE_WEIGHTS_INDEX, PICKLED_WEIGHTS_FILE))


def choose_model_dir(path):
    """(model directory, why) for prediction: a model dir (config.json + weights: a checkpoint, or the
    final model the engine exports at an output_dir's root) as given, else an output_dir's best
    checkpoint (trainer_state.json's name, resolved in this output_dir), else its newest."""
    if _is_model_dir(path):
        is_output_dir = os.path.isfile(os.path.join(path, TRAIN_CONFIG_FILE)) and checkpoint_step(os.path.basename(os.path.normpath(path))) is None
        return path, (f"the final model in {path}" if is_output_dir else f"the model in {path}")
    state_file = os.path.join(path, TRAINER_STATE_FILE)
    if os.path.lexists(state_file):
        state = read_json_object(state_file, "a trainer state")
        best = resolve_best_checkpoint(path, state.get("best_checkpoint"))
        if best:
            score = f" ({state.get('metric_for_best')}={state.get('best_metric')})" if state.get("metric_for_best") else ""
            return best, f"the best checkpoint of {path}: {os.path.basename(best)}{score}"
    newest = latest_checkpoint(path)
    if newest is None:
        raise DataError(f"no model found in {path}: pass a checkpoint-<step> directory, a model directory or an output_dir")
    return newest, f"the newest checkpoint of {path}: {os.path.basename(newest)} (no best checkpoint recorded there)"


def resolve_model_dir(path):
    """choose_model_dir's directory; says which it picked on stderr (stdout may carry predictions)."""
    import sys

    chosen, why = choose_model_dir(path)
    print(f"using {why}", file=sys.stderr)
    return chosen


# ----------------------------------------------------------------------------
# resume policy
# ----------------------------------------------------------------------------
