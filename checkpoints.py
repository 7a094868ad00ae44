"""Checkpoints and the output directory.

What it holds, in reading order:
  * the on-disk format: safetensors for tensors, JSON for everything else, never a pickle on load;
    a CHECKPOINT_COMPLETE manifest (size and sha256 of every file) written last, so a checkpoint is
    either complete and verified or refused naming the bad file;
  * model weights for any model directory (checkpoints, final models, local Paddle dirs), matched to
    the model exactly; old model_state.pdparams only through a restricted unpickler (numpy arrays);
  * the optimizer state, keyed by structured parameter names;
  * saving (atomic: temp dir, manifest, rename), reading/validating, applying, rotation, the best
    checkpoint by name, and choosing the model directory a prediction CLI loads;
  * resume policy: auto with fall-back, refusing resumes that cannot be exact (config keys, ranks,
    training data), max_steps below the checkpoint;
  * one run per output_dir (an flock held for the run), and the non-empty / overwrite policy; on nodes
    without a shared disk each node's writer claims its own copy the same way (multinode.py decides who).

Imports: the standard library and numpy; of the project `configuration` (errors), `distributed`,
`reporting` and `rng`; safetensors, paddle and paddlenlp inside the functions.
"""
import contextlib
import dataclasses
import errno
import hashlib
import importlib
import io
import json
import os
import pickle
import posixpath
import re
import shutil
import tempfile
from typing import Any, Dict, List, Optional

import numpy as np

from configuration import ConfigError
from distributed import is_main_process, writes_output
from reporting import attach_run_log, log, write_json_atomic
from rng import get_rng_state, rng_state_from_json, rng_state_to_json

FORMAT = 2  # 1 = the pickled format (.pdparams/.pdopt/trainer_state.pdparams), refused on resume
CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"  # JSON manifest; its presence makes a checkpoint visible
SAFE_WEIGHTS_FILE = "model.safetensors"
SAFE_WEIGHTS_INDEX = "model.safetensors.index.json"
PICKLED_WEIGHTS_FILE = "model_state.pdparams"
OPTIMIZER_FILE = "optimizer.safetensors"
OPTIMIZER_META_FILE = "optimizer.json"
TRAINER_STATE_FILE = "trainer_state.json"  # in a checkpoint: the full state; at output_dir's root: step and best
TRAIN_CONFIG_FILE = "train_config.json"
RANK_RNG_FILE = "rng_state_rank{rank}.json"  # ranks > 0; rank 0's RNG is in TRAINER_STATE_FILE
SHARING_CHECK_PREFIX = ".fs-check-"  # multinode.py's start-up files: does this rank see that rank's output_dir?
OLD_FORMAT_FILES = ("trainer_state.pdparams", "optimizer.pdopt")
LOCK_FILE = ".lock"

# Changing these between a checkpoint and its resume is allowed and logged: they only touch reporting,
# evaluation, where the run lives, or how long it goes (max_steps/num_train_epochs also stretch the LR
# decay, which is what extending a run means). Every other key is unsafe by default (resume_mismatches).
SAFE_RESUME_KEYS = frozenset({
    "max_steps", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "report_to", "eval_batch_size", "output_dir", "resume_from_checkpoint", "overwrite_output_dir",
    "wandb_project", "wandb_run_name", "max_eval_samples", "num_eval_samples_logged", "num_beams",
    "test_file", "device", "early_stopping_patience", "early_stopping_threshold", "load_best_model_at_end",
    "resume_ignore_mismatch", "converted_model_dir",
    "probe_text", "probe_answer", "probe_top_k",  # train_mlm's cloze report
    "sample_prompt", "sample_max_new_tokens",  # train_clm's sample generation
})


class CheckpointError(ConfigError):
    """A checkpoint (or model directory) that cannot be trusted or cannot resume exactly; the message
    names the file and what is wrong. A ConfigError, so the entry point prints it and exits 2."""


def unwrap_model(model):
    """The bare model inside DataParallel and the loss wrapper."""
    while hasattr(model, "_layers") or hasattr(model, "inner_model"):
        model = getattr(model, "_layers", None) or getattr(model, "inner_model")
    return model


def save_config(config, output_dir, name=TRAIN_CONFIG_FILE):
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, name), config)


# ----------------------------------------------------------------------------
# files: bytes in, bytes out, every write fsynced
# ----------------------------------------------------------------------------
def _one_line(e):
    """A foreign exception's text for our one-line errors (paddlenlp's and pickle's can span lines)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _json_default(obj):
    if isinstance(obj, np.generic):  # a numpy scalar that slipped into a state is still a plain number
        return obj.item()
    raise TypeError(f"not JSON data: {type(obj).__name__}")


def _json_bytes(obj):
    return json.dumps(obj, ensure_ascii=False, indent=1, default=_json_default).encode("utf-8")


def _write_bytes(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_json(where, data):
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{where}: not UTF-8 text (corrupted?)") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: bad JSON at line {e.lineno} ({e.msg}); truncated or corrupted") from None


def _parse_safetensors(where, data):
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own SafetensorError
        raise CheckpointError(f"{where}: truncated or not a safetensors file ({_one_line(e)})") from None


def _digest(path):
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return {"size": size, "sha256": h.hexdigest()}


def _relative_files(directory):
    for d, _, files in os.walk(directory):
        for name in files:
            yield os.path.relpath(os.path.join(d, name), directory).replace(os.sep, "/")


def _read_manifest(directory):
    """The JSON manifest of a checkpoint directory, None when it has none (a plain model directory)."""
    path = os.path.join(directory, COMPLETE_MARKER)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    if not data.lstrip().startswith(b"{"):
        if any(os.path.isfile(os.path.join(directory, n)) for n in OLD_FORMAT_FILES):
            return {"format": 1}
        raise CheckpointError(f"{path}: incomplete marker (not a JSON manifest)")
    manifest = _parse_json(path, data)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path}: incomplete marker (no format {FORMAT} file list)")
    for name, entry in manifest["files"].items():
        # Names stay inside the checkpoint: a forged "../../dev/zero" must not be read.
        if name != posixpath.normpath(name) or name.startswith(("/", "../")) or name in ("..", ".") \
                or not isinstance(entry, dict) or type(entry.get("size")) is not int or not isinstance(entry.get("sha256"), str):
            raise CheckpointError(f"{path}: bad entry {name!r}")
    return manifest


def _dir_reader(directory):
    """A reader for any model directory: checksummed when it is a (current format) checkpoint."""
    manifest = _read_manifest(directory)
    return _Reader(directory, manifest if manifest and manifest.get("format") == FORMAT else None)


class _Reader:
    """Reads files of one directory; in a checkpoint each file must match its manifest entry."""

    def __init__(self, directory, manifest=None):
        self.directory, self.manifest = directory, manifest
        self.seen = set()

    def has(self, name):
        if self.manifest is not None:
            return name in self.manifest["files"]
        return os.path.isfile(os.path.join(self.directory, name))

    def read(self, name):
        path = os.path.join(self.directory, name)
        self.seen.add(name)
        entry = None
        if self.manifest is not None:
            entry = self.manifest["files"].get(name)
            if entry is None:
                raise CheckpointError(f"{path}: not listed in {COMPLETE_MARKER}")
        try:
            with open(path, "rb") as f:
                data = f.read(entry["size"] + 1 if entry else -1)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        except OSError as e:
            raise CheckpointError(f"{path}: unreadable ({e.strerror})") from None
        if entry is not None:
            if len(data) != entry["size"]:
                found = f"{len(data)} bytes" if len(data) < entry["size"] else "more bytes"
                raise CheckpointError(f"{path}: {found}, {entry['size']} recorded in {COMPLETE_MARKER} "
                                      f"({'truncated' if len(data) < entry['size'] else 'changed'})")
            if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
                raise CheckpointError(f"{path}: sha256 differs from {COMPLETE_MARKER} (corrupted)")
        return data

    def json(self, name):
        return _parse_json(os.path.join(self.directory, name), self.read(name))

    def safetensors(self, name):
        return _parse_safetensors(os.path.join(self.directory, name), self.read(name))


# ----------------------------------------------------------------------------
# model weights: safetensors, or an old .pdparams through a restricted unpickler
# ----------------------------------------------------------------------------
def _numpy_global(module, name):
    # numpy 2 pickles its internals as numpy._core.*, numpy 1 as numpy.core.*: accept either spelling.
    for candidate in (module, module.replace("numpy._core", "numpy.core"), module.replace("numpy.core", "numpy._core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"{module}.{name} not found")


# What paddle.save pickles for a state_dict (traced with a recording find_class on paddle 3.3.1): numpy
# arrays (ndarray, dtype, _reconstruct) in a plain dict. OrderedDict and numpy scalars: other writers' state dicts.
_ALLOWED_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _WeightsUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name}: only numpy arrays are read from a pickle")
        if module == "collections":
            import collections

            return collections.OrderedDict
        return _numpy_global(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def read_pickled_state_dict(where, data):
    """An old paddle.save'd state_dict (name -> numpy array) without running any code it may carry."""
    try:
        state = _WeightsUnpickler(io.BytesIO(data)).load()
    except Exception as e:  # noqa: BLE001 - a crafted or broken pickle fails in many ways
        raise CheckpointError(f"{where}: not a plain paddle state_dict ({_one_line(e)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: not a state_dict (a {type(state).__name__})")
    state = dict(state)
    state.pop("StructuredToParameterName@@", None)  # paddle's name map, not a weight
    if "UnpackBigParamInfor@@" in state:
        raise CheckpointError(f"{where}: a big-parameter split pickle; re-save it with safetensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "biufc":
            raise CheckpointError(f"{where}: entry {key!r} is not a numeric array")
    return state


def read_model_weights(directory, reader=None):
    """(name -> numpy array, file it came from) for a model directory: model.safetensors (or its sharded
    index) first, as paddlenlp does, else an old model_state.pdparams through the restricted unpickler."""
    reader = reader or _dir_reader(directory)
    if reader.has(SAFE_WEIGHTS_FILE):
        return reader.safetensors(SAFE_WEIGHTS_FILE), os.path.join(directory, SAFE_WEIGHTS_FILE)
    if reader.has(SAFE_WEIGHTS_INDEX):
        index_path = os.path.join(directory, SAFE_WEIGHTS_INDEX)
        weight_map = reader.json(SAFE_WEIGHTS_INDEX).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no weight_map")
        weights = {}
        for shard in sorted(set(weight_map.values())):
            if not isinstance(shard, str) or os.path.basename(shard) != shard:
                raise CheckpointError(f"{index_path}: bad shard name {shard!r}")
            arrays = reader.safetensors(shard)
            listed = {k for k, v in weight_map.items() if v == shard}
            if set(arrays) != listed:
                raise CheckpointError(f"{os.path.join(directory, shard)}: holds other tensors than {SAFE_WEIGHTS_INDEX} lists")
            weights.update(arrays)
        return weights, index_path
    if reader.has(PICKLED_WEIGHTS_FILE):
        path = os.path.join(directory, PICKLED_WEIGHTS_FILE)
        return read_pickled_state_dict(path, reader.read(PICKLED_WEIGHTS_FILE)), path
    raise CheckpointError(f"{directory}: no model weights ({SAFE_WEIGHTS_FILE} or {PICKLED_WEIGHTS_FILE})")


def _name_list(names, limit=8):
    names = sorted(names)
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _ignored(model, attr, key):
    return any(re.search(pattern, key) for pattern in (getattr(model, attr, None) or []))


def match_model_weights(model, weights, source, allow_new_head=False):
    """(the weights to load, notes) or CheckpointError naming missing, unexpected or mis-shaped keys.

    Exact by default: the file must hold every key of model.state_dict() (tied parameters under each
    of their names, as save_pretrained writes them) and nothing else. allow_new_head=True is for
    pretrained weights: the file may be the base model alone (keys without base_model_prefix) and
    keys outside the base model may be missing (a new head, initialized) or unused (another head),
    both named in the notes. Keys paddlenlp itself ignores by design (_keys_to_ignore_on_*) are allowed.
    """
    expected = model.state_dict()
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."
    has_base = prefix != "." and hasattr(model, prefix[:-1])  # a model with a head around its base model
    weights, other_head = dict(weights), set()
    if allow_new_head and prefix != "." and weights:
        if has_base and not any(k.startswith(prefix) for k in weights):
            weights = {prefix + k: v for k, v in weights.items()}  # a base-model file into a model with a head
        elif not has_base and any(k.startswith(prefix) for k in weights):  # a file with a head into the base model
            other_head = {k for k in weights if not k.startswith(prefix)}
            weights = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in weights.items()}

    def outside_base(key):
        return has_base and not key.startswith(prefix)

    missing = [k for k in expected if k not in weights and not _ignored(model, "_keys_to_ignore_on_load_missing", k)
               and not _ignored(model, "_keys_to_ignore_on_save", k)]
    unexpected = [k for k in weights if k not in expected and not _ignored(model, "_keys_to_ignore_on_load_unexpected", k)]
    notes = []
    if allow_new_head:
        new_head = [k for k in missing if outside_base(k)]
        unused = [k for k in unexpected if outside_base(k) or k in other_head]
        missing = [k for k in missing if k not in new_head]
        unexpected = [k for k in unexpected if k not in unused]
        if new_head:
            notes.append(f"{source}: newly initialized (not in the file): {_name_list(new_head)}")
        if unused:
            notes.append(f"{source}: not used by {type(model).__name__}: {_name_list(unused)}")
    shapes = [f"{k} {list(weights[k].shape)} (model {list(expected[k].shape)})" for k in expected
              if k in weights and list(weights[k].shape) != list(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {_name_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {_name_list(unexpected)}")
    if shapes:
        problems.append(f"wrong shape {_name_list(shapes)}")
    if problems:
        raise CheckpointError(f"{source}: weights do not match {type(model).__name__}: " + "; ".join(problems))
    # Tied parameters appear under several names: their copies in the file must agree.
    by_tensor = {}
    for key, tensor in expected.items():
        if key in weights:
            by_tensor.setdefault(id(tensor), []).append(key)
    for keys in by_tensor.values():
        if any(not np.array_equal(weights[keys[0]], weights[k]) for k in keys[1:]):
            raise CheckpointError(f"{source}: tied weights {', '.join(keys)} differ")
    return {k: weights[k] for k in expected if k in weights}, notes


def _as_dtype_of(array, tensor, key, source):
    import paddle

    dtype = tensor.dtype
    if dtype == paddle.bfloat16:  # numpy has no bfloat16: paddle's own numpy form is uint16
        if array.dtype != np.uint16:
            raise CheckpointError(f"{source}: {key} is {array.dtype}, the model's bfloat16 needs its uint16 form")
        return array
    want = np.dtype(str(dtype).replace("paddle.", ""))
    if array.dtype == want:
        return array
    if array.dtype.kind == "f" and want.kind == "f":
        return array.astype(want)  # as paddlenlp's from_pretrained does: weights follow the model's dtype
    raise CheckpointError(f"{source}: {key} is {array.dtype}, the model has {want}")


def apply_model_weights(model, weights, source, allow_new_head=False):
    """Check (match_model_weights) and load weights into the bare model. Returns the notes."""
    model = unwrap_model(model)
    matched, notes = match_model_weights(model, weights, source, allow_new_head)
    expected = model.state_dict()
    model.set_state_dict({k: _as_dtype_of(v, expected[k], k, source) for k, v in matched.items()})
    return notes


def model_class_for_dir(model_class, directory):
    """The concrete class: paddlenlp's Auto classes pick it from config.json's architectures."""
    resolve = getattr(model_class, "_get_model_class_from_config", None)
    if resolve is None:
        return model_class
    config_file = next((os.path.join(directory, n) for n in ("config.json", "model_config.json")
                        if os.path.isfile(os.path.join(directory, n))), None)
    if config_file is None:
        raise CheckpointError(f"{directory}: no config.json")
    try:
        return resolve(directory, config_file)
    except Exception as e:  # noqa: BLE001 - paddlenlp raises AttributeError/KeyError for unknown architectures
        raise CheckpointError(f"{config_file}: no {model_class.__name__} for its architectures ({_one_line(e)})") from None


def load_model_dir(model_class, directory, allow_new_head=False, **config_overrides):
    """A model from a directory (checkpoint, final model, local Paddle dir): built from config.json
    (with overrides, as from_pretrained's kwargs) without paddlenlp reading any weights, then the
    weights loaded and matched exactly (see match_model_weights). Never unpickles beyond numpy arrays."""
    from paddlenlp.generation import GenerationConfig
    from paddlenlp.transformers.model_utils import dtype_guard

    if not os.path.isdir(directory):
        raise CheckpointError(f"model directory not found: {directory}")
    weights, source = read_model_weights(directory, _dir_reader(directory))  # first: a bad file fails before the build
    cls = model_class_for_dir(model_class, directory)
    try:
        config, model_kwargs = cls.config_class.from_pretrained(directory, return_unused_kwargs=True, **config_overrides)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{directory}: unreadable config.json ({_one_line(e)})") from None
    with dtype_guard(config.dtype or "float32"):
        model = cls(config, *(config["init_args"] or ()), **model_kwargs)
    if model.can_generate() and os.path.isfile(os.path.join(directory, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(directory)
    for note in apply_model_weights(model, weights, source, allow_new_head):
        log(note)
    return model


# ----------------------------------------------------------------------------
# optimizer state, keyed by structured parameter names (stable across processes, unlike param.name)
# ----------------------------------------------------------------------------
def _structured_names(model):
    """param.name -> the first structured name of that parameter (tied parameters count once)."""
    names = {}
    for name, param in unwrap_model(model).named_parameters():
        names.setdefault(param.name, name)
    return names


def _optimizer_vars(optimizer, model):
    """Every tensor of the optimizer's state by a stable key: "<parameter>/<accumulator>" (e.g.
    "bart.shared.weight/moment1") and "<parameter>/master_weight". Accumulators of a master weight
    (multi_precision) belong to its parameter."""
    names = _structured_names(model)
    masters = getattr(optimizer, "_master_weights", None) or {}
    owners = {**names, **{var.name: names[p] for p, var in masters.items() if p in names}}
    found = {}
    for accumulator, per_owner in optimizer._accumulators.items():
        for owner, var in per_owner.items():
            if owner not in owners:
                raise CheckpointError(f"optimizer state for {owner}, which is not a parameter of the model")
            found[f"{owners[owner]}/{accumulator}"] = var
    for param_name, var in masters.items():
        if param_name not in names:
            raise CheckpointError(f"optimizer master weight for {param_name}, which is not a parameter of the model")
        found[f"{names[param_name]}/master_weight"] = var
    return found


def optimizer_state(optimizer, model):
    """(arrays, meta) to save: _optimizer_vars as numpy arrays, and meta with each one's dtype."""
    if getattr(optimizer, "_accumulators_holder", None):
        raise CheckpointError("optimizer holds a loaded state that was never applied (set_state_dict before its first step)")
    found = _optimizer_vars(optimizer, model)
    arrays = {key: np.ascontiguousarray(var.numpy()) for key, var in found.items()}
    return arrays, {"format": FORMAT, "dtypes": {key: str(var.dtype).replace("paddle.", "") for key, var in found.items()}}


def create_accumulators(optimizer, parameters):
    """The optimizer's per-parameter state (moments, beta powers, master weights), made as its first step would."""
    import paddle

    block = paddle.static.default_main_program().global_block()
    guard = getattr(paddle.base.framework, "dygraph_guard_if_declarative", contextlib.nullcontext)
    if getattr(optimizer, "helper", None) is None:  # paddle 2.6 makes it in its first step (_create_optimization_pass)
        from paddle.base.layer_helper import LayerHelper

        optimizer.helper = LayerHelper(optimizer.__class__.__name__)
    with guard():
        optimizer._create_accumulators(block, list(parameters))


def apply_optimizer_state(optimizer, model, arrays, meta, source):
    """Create the accumulators of the saved parameters now (paddle would on the first step) and fill them,
    so a missing, unexpected or mis-shaped entry is refused here instead of surfacing mid-training."""

    params = {name: p for name, p in unwrap_model(model).named_parameters()}
    wanted = set()
    for key in arrays:
        param = key.rpartition("/")[0]
        if param not in params:
            raise CheckpointError(f"{source}: state for {param}, which is not a parameter of the model")
        wanted.add(param)
    if not wanted:
        return
    create_accumulators(optimizer, [p for name, p in params.items() if name in wanted])
    targets = {k: v for k, v in _optimizer_vars(optimizer, model).items() if k.rpartition("/")[0] in wanted}
    missing, unexpected = set(targets) - set(arrays), set(arrays) - set(targets)
    if missing or unexpected:
        raise CheckpointError(f"{source}: optimizer state does not match: "
                              + "; ".join(f"{what} {_name_list(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys))
    dtypes = meta.get("dtypes", {})
    for key, var in targets.items():
        array, want = arrays[key], str(var.dtype).replace("paddle.", "")
        if list(array.shape) != list(var.shape) or dtypes.get(key) != want:
            raise CheckpointError(f"{source}: {key} is {dtypes.get(key)} {list(array.shape)}, the optimizer has {want} {list(var.shape)}")
        var.set_value(array)


# ----------------------------------------------------------------------------
# saving
# ----------------------------------------------------------------------------
def save_model_files(model, tokenizer, directory, extra_files=None):
    """The one place a model is unwrapped and saved: checkpoints and final exports both use it."""
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


def best_checkpoint_name(value):
    """A best checkpoint recorded as a name ("checkpoint-300"); old records held absolute paths."""
    return os.path.basename(os.path.normpath(value)) if value else None


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
        files[name] = _digest(path)
        with open(path, "rb") as f:  # save_pretrained and the tokenizer do not fsync
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


def read_checkpoint(path):
    """Read and validate every file of a checkpoint into memory, or raise CheckpointError naming the
    file and what is wrong (missing, truncated, corrupted, bad JSON, incomplete marker, old format)."""
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
        raise CheckpointError(f"{path} is not a complete checkpoint (no {COMPLETE_MARKER})")
    manifest = _read_manifest(path)
    if manifest.get("format") == 1:
        raise _old_format_error(path)
    reader = _Reader(path, manifest)
    weights, weights_source = read_model_weights(path, reader)
    state_where = os.path.join(path, TRAINER_STATE_FILE)
    state = reader.json(TRAINER_STATE_FILE)
    if not isinstance(state, dict) or state.get("format") != FORMAT or not isinstance(state.get("train_state"), dict) \
            or not isinstance(state.get("lr_scheduler"), dict) or not isinstance(state.get("world_size"), int):
        raise CheckpointError(f"{state_where}: not a format {FORMAT} trainer state")
    try:
        rng = rng_state_from_json(state.get("rng"))
    except ValueError as e:
        raise CheckpointError(f"{state_where}: {e}") from None
    rank_rng = {}
    for rank in range(1, state["world_size"]):
        name = RANK_RNG_FILE.format(rank=rank)
        data = reader.json(name)
        try:
            rank_rng[rank] = rng_state_from_json(data.get("rng") if isinstance(data, dict) else None)
        except ValueError as e:
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
    return CheckpointContents(path=path, step=int(state.get("step", manifest.get("step", 0))), weights=weights,
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
def checkpoint_step(name):
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name or "")
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir):
    """Complete checkpoints, oldest first. Half-written ones lack the marker and are invisible."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = checkpoint_step(name)
        path = os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
            found.append((step, path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir):
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def resolve_best_checkpoint(output_dir, value):
    """The best checkpoint (a name, or an old absolute path) as a path in the *current* output_dir,
    None when it is not there (rotated away, never saved)."""
    name = best_checkpoint_name(value)
    path = os.path.join(output_dir, name) if name else None
    return path if path and checkpoint_step(name) is not None and os.path.isfile(os.path.join(path, COMPLETE_MARKER)) else None


def rotate_checkpoints(output_dir, save_total_limit, keep):
    """Delete the oldest checkpoints beyond the limit, never one in `keep` (names or paths: the best,
    which may be a step that is not a save step) nor the newest."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    ckpts = list_checkpoints(output_dir)
    protected = {best_checkpoint_name(k) for k in keep if k} | {os.path.basename(p) for p in ckpts[-1:]}
    remaining, removed = list(ckpts), []
    for path in ckpts:  # oldest first
        if len(remaining) <= save_total_limit:
            break
        if os.path.basename(path) in protected:
            continue
        # Drop the marker first: a crash mid-delete must not leave a "complete" torso.
        os.remove(os.path.join(path, COMPLETE_MARKER))
        shutil.rmtree(path, ignore_errors=True)
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
    from data_utils import DataError

    if _is_model_dir(path):
        is_output_dir = os.path.isfile(os.path.join(path, TRAIN_CONFIG_FILE)) and checkpoint_step(os.path.basename(os.path.normpath(path))) is None
        return path, (f"the final model in {path}" if is_output_dir else f"the model in {path}")
    state_file = os.path.join(path, TRAINER_STATE_FILE)
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as f:
            try:
                state = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(f"{state_file}: bad JSON at line {e.lineno} ({e.msg})") from None
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
def resolve_resume(config):
    """None (no resume), or the read checkpoint to resume (CheckpointContents, usable as its path).

    "auto": the newest complete checkpoint that reads, newest first, logging each one skipped and why;
    none at all starts fresh, but checkpoints that all fail to read are an error (never a silent restart).
    An explicit path that is damaged is a CheckpointError naming the file.
    """
    value = config.get("resume_from_checkpoint")
    if not value:
        return None
    if value != "auto":
        if not os.path.isdir(value):
            raise ConfigError(f"resume_from_checkpoint: directory not found: {value}")
        return read_checkpoint(value)
    out = config["output_dir"]
    candidates = list_checkpoints(out)[::-1]
    if not candidates:
        log(f"resume_from_checkpoint=auto: no complete checkpoint in {out}, starting fresh")
        return None
    failures = []
    for path in candidates:
        try:
            contents = read_checkpoint(path)
        except CheckpointError as e:
            log(f"resume_from_checkpoint=auto: skipping {os.path.basename(path)}: {e}")
            failures.append(f"{os.path.basename(path)}: {e}")
            continue
        if failures:
            log(f"resume_from_checkpoint=auto: using {contents.name}, the newest checkpoint that reads")
        return contents
    raise CheckpointError(f"resume_from_checkpoint=auto: no checkpoint in {out} can be read: " + "; ".join(failures))


_UNSET = "(unset)"


def resume_mismatches(saved_config, new_config):
    """(unsafe, safe): the keys whose value differs, each (key, old, new), sorted by key. Safe keys are
    SAFE_RESUME_KEYS; every other difference (a key only one side has included) is unsafe."""
    old, new = _jsonable_config(saved_config), _jsonable_config(new_config)
    unsafe, safe = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            (safe if key in SAFE_RESUME_KEYS else unsafe).append((key, a, b))
    return unsafe, safe


def data_fingerprint(features):
    """sha256 over the tokenized training features, in order: a resume on other data is refused."""
    h = hashlib.sha256()
    count = 0
    for feature in features:
        h.update(json.dumps(feature, sort_keys=True, separators=(",", ":"), default=lambda o: np.asarray(o).tolist()).encode())
        h.update(b"\n")
        count += 1
    return f"sha256:{h.hexdigest()} ({count} features)"


def _changes(items):
    def show(v):
        return v if isinstance(v, str) and v == _UNSET else json.dumps(v, ensure_ascii=False)

    return ", ".join(f"{key} {show(a)} -> {show(b)}" for key, a, b in items)


def check_resume_compatible(checkpoint, config, world_size, fingerprint, ignore_mismatch=False):
    """Refuse a resume that cannot continue exactly: config keys outside SAFE_RESUME_KEYS, the number of
    ranks, or the training data (fingerprint) changed. Returns the lines to log (allowed changes, and the
    warning when ignore_mismatch overrides a refusal); raises CheckpointError otherwise."""
    contents = _contents(checkpoint)
    unsafe, safe = resume_mismatches(contents.config, config)
    state = contents.trainer_state
    if state.get("world_size") != world_size:
        unsafe.append(("ranks", state.get("world_size"), world_size))
    if fingerprint is not None and state.get("data_fingerprint") != fingerprint:
        unsafe.append(("training data", state.get("data_fingerprint") or "(not recorded)", fingerprint))
    lines = [f"resuming from {contents.name} with changed settings (allowed): {_changes(safe)}"] if safe else []
    if unsafe:
        if not ignore_mismatch:
            raise CheckpointError(
                f"cannot resume {contents.path} exactly: {_changes(unsafe)}; restore them, or pass "
                "--resume_ignore_mismatch=True to resume anyway (the run will differ from one that never stopped)"
            )
        lines.append(f"WARNING: resume_ignore_mismatch=True: resuming {contents.name} although {_changes(unsafe)}; "
                     "the run will differ from one that never stopped")
    return lines


def check_max_steps(checkpoint_step_, max_steps, checkpoint_name="the checkpoint"):
    """A max_steps (as computed from max_steps/num_train_epochs) below the checkpoint's step is an error."""
    if max_steps < checkpoint_step_:
        raise CheckpointError(
            f"max_steps is {max_steps}, below step {checkpoint_step_} of {checkpoint_name}: raise --max_steps "
            f"(or --num_train_epochs) to at least {checkpoint_step_}, or start a new run in another output_dir"
        )


# ----------------------------------------------------------------------------
# the output directory: one run at a time, refusing a used one, touching nothing until checks pass
# ----------------------------------------------------------------------------
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


_claims: Dict[str, OutputDirClaim] = {}  # output_dir -> this process's claim (open_output_dir marks it)
_held: Dict[str, OutputDirClaim] = {}  # output_dir -> the claim claimed_output_dir holds, taken or not yet


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
    _claims[claim.output_dir] = claim


def claim_node_output_dir(config):
    """A node's writer, when its node does not see rank 0's output_dir (multinode.py): claim this node's own
    copy as rank 0 claimed its own (lock, writable, may be used), into the claim run_main holds
    (claimed_output_dir), so that it is released, or undone for a refused run, the same way."""
    path = os.path.abspath(config["output_dir"])
    claim = _held.get(path)
    if claim is None:  # main() called without run_main: released at exit instead
        import atexit

        claim = OutputDirClaim(path)
        atexit.register(lambda: release_output_dir(claim, keep=claim.opened))
    _take_claim(claim, config)


def release_output_dir(claim, keep=False):
    """End the claim. keep=False (the run was refused): remove exactly what the claim created (the lock
    file, or restore its old bytes; directories it made). keep=True: leave the run's files, drop the lock."""
    _claims.pop(claim.output_dir, None)
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


@contextlib.contextmanager
def claimed_output_dir(config):
    """Wrap a whole run: claim output_dir, and on the way out release it, keeping the run's files only
    when open_output_dir ran (a run refused before that leaves output_dir byte-identical)."""
    claim = claim_output_dir(config)
    _held[claim.output_dir] = claim
    try:
        yield claim
    finally:
        _held.pop(claim.output_dir, None)
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
    claim = _claims.get(os.path.abspath(out))
    if claim is not None:
        claim.opened = True
