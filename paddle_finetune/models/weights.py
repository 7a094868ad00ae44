"""Model weights for any model directory (checkpoints, final models, local Paddle dirs): safetensors (or a
sharded index), or an old model_state.pdparams through a restricted unpickler that builds numpy arrays and
nothing else; matched to the model exactly (missing, unexpected, mis-shaped and untied weights refused by
name) and applied.

A model directory is checked before anything is allocated: the safetensors header (8-byte length, then a JSON
header of bounded size: names, dtypes, shapes, offsets) is read without reading the tensors, every size in
config.json must fit the weights shipped (a config far beyond them is refused before the model is built), and
the built model's names and shapes are compared with the header before the tensors are read.

Imports: the standard library and numpy; paddle and paddlenlp inside the functions; of the project `errors`,
`checkpoints.files` and `reporting`.
"""
import importlib
import io
import os
import pickle
import re
import struct

import numpy as np

from paddle_finetune.checkpoints.files import (
    MAX_JSON_DEPTH,
    PICKLED_WEIGHTS_FILE,
    SAFE_WEIGHTS_FILE,
    SAFE_WEIGHTS_INDEX,
    _dir_reader,
    _one_line,
    _parse_json,
    open_regular,
    read_json_file,
)
from paddle_finetune.errors import CheckpointError
from paddle_finetune.reporting.console import log


def unwrap_model(model):
    """The bare model inside DataParallel and the loss wrapper."""
    while hasattr(model, "_layers") or hasattr(model, "inner_model"):
        model = getattr(model, "_layers", None) or getattr(model, "inner_model")
    return model

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


# ----------------------------------------------------------------------------
# the safetensors header, read without the tensors
# ----------------------------------------------------------------------------
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                      "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def read_safetensors_header(path):
    """{name: (shape, dtype)} of a safetensors file from its header alone (the 8-byte length and the JSON header,
    bounded in size and nesting); every entry's offsets must lie in the file and match its shape and dtype.
    CheckpointError names the file."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({size} bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {length} bytes in a file "
                                  f"of {size})")
        header = _parse_json(path, f.read(length), MAX_JSON_DEPTH)
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    shapes = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES \
                or not isinstance(entry.get("shape"), list) or not isinstance(entry.get("data_offsets"), list) \
                or not all(type(d) is int and d >= 0 for d in entry["shape"]) or len(entry["data_offsets"]) != 2 \
                or not all(type(o) is int for o in entry["data_offsets"]):
            raise CheckpointError(f"{path}: not a safetensors file (bad header entry {name!r})")
        start, end = entry["data_offsets"]
        numel = int(np.prod(entry["shape"], dtype=object)) if entry["shape"] else 1
        if not 0 <= start <= end <= data_bytes or end - start != numel * SAFETENSORS_DTYPES[entry["dtype"]]:
            raise CheckpointError(f"{path}: truncated or not a safetensors file ({name!r} lies outside the file or "
                                  "disagrees with its shape)")
        shapes[name] = (tuple(entry["shape"]), entry["dtype"])
    return shapes


def weights_header(directory):
    """{name: (shape, dtype)} of a model directory's safetensors weights (or sharded index), read lazily; None for
    an old pickled model_state.pdparams (its shapes are known only once read)."""
    if os.path.lexists(os.path.join(directory, SAFE_WEIGHTS_FILE)):
        return read_safetensors_header(os.path.join(directory, SAFE_WEIGHTS_FILE))
    index_path = os.path.join(directory, SAFE_WEIGHTS_INDEX)
    if os.path.lexists(index_path):
        index = read_json_file(index_path, max_bytes=64 << 20)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index_path}: no weight_map")
        shapes = {}
        for shard in sorted(set(weight_map.values()), key=str):
            if not isinstance(shard, str) or os.path.basename(shard) != shard:
                raise CheckpointError(f"{index_path}: bad shard name {shard!r}")
            shapes.update(read_safetensors_header(os.path.join(directory, shard)))
        return shapes
    if os.path.lexists(os.path.join(directory, PICKLED_WEIGHTS_FILE)):
        return None
    raise CheckpointError(f"{directory}: no model weights ({SAFE_WEIGHTS_FILE} or {PICKLED_WEIGHTS_FILE})")


# Sizes in a config.json that each shape a weight: none can exceed the weights' element count, and (a, b) pairs
# shape one matrix (vocab_size x hidden_size, ...). Names of paddlenlp's BART, BERT/ERNIE/RoBERTa and GPT configs.
_WIDTHS = ("hidden_size", "d_model", "n_embd")
_ROWS = ("vocab_size", "max_position_embeddings", "n_positions", "type_vocab_size", "intermediate_size",
         "encoder_ffn_dim", "decoder_ffn_dim")
_COUNTS = ("num_hidden_layers", "encoder_layers", "decoder_layers", "n_layer", "num_attention_heads",
           "encoder_attention_heads", "decoder_attention_heads", "n_head")


def check_config_fits_weights(config, shapes, source):
    """Refuse (CheckpointError) a config.json far beyond the weights it ships, before the model is built: every
    matrix its sizes imply (vocab_size x hidden_size, max_position_embeddings x hidden_size, ...) must fit in the
    weights' element count, and every layer or head count in their number of tensors."""
    total = sum(int(np.prod(shape, dtype=object)) for shape, _ in shapes.values())
    tensors = len(shapes)
    sizes = {k: v for k, v in config.items() if type(v) is int}
    width = next((sizes[k] for k in _WIDTHS if k in sizes), 1)
    for key in _ROWS:
        if key in sizes and sizes[key] * max(width, 1) > total:
            raise CheckpointError(f"{source}: config.json's {key}={sizes[key]} (x {width}) is far beyond the weights it "
                                  f"ships ({total} numbers in {tensors} tensors); refusing to build the model")
    for key in _WIDTHS:
        if key in sizes and sizes[key] > total:
            raise CheckpointError(f"{source}: config.json's {key}={sizes[key]} is far beyond the weights it ships "
                                  f"({total} numbers); refusing to build the model")
    for key in _COUNTS:
        if key in sizes and sizes[key] > tensors:
            raise CheckpointError(f"{source}: config.json's {key}={sizes[key]} is more than the {tensors} tensors it "
                                  "ships; refusing to build the model")


class _Shape:
    """A stand-in for a weight when only its header is known: what match_model_weights looks at."""

    def __init__(self, shape):
        self.shape = shape


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
        if isinstance(weights[keys[0]], _Shape):  # only the header is known yet: the values are compared when read
            continue
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
    """A model from a directory (checkpoint, final model, local Paddle dir), checked before anything is allocated:
    the weights' header is read first (not the tensors), config.json must fit it (check_config_fits_weights), the
    model is built from config.json (with overrides, as from_pretrained's kwargs) without paddlenlp reading any
    weights, its names and shapes are compared with the header, and only then are the weights read, matched exactly
    (see match_model_weights) and loaded. Never unpickles beyond numpy arrays."""
    from paddlenlp.generation import GenerationConfig
    from paddlenlp.transformers.model_utils import dtype_guard

    if not os.path.isdir(directory):
        raise CheckpointError(f"model directory not found: {directory}")
    shapes = weights_header(directory)  # first: a bad file fails before the build, and a huge one is not read
    cls = model_class_for_dir(model_class, directory)
    config_file = next((os.path.join(directory, n) for n in ("config.json", "model_config.json")
                        if os.path.lexists(os.path.join(directory, n))), None)
    raw = read_json_file(config_file, max_bytes=16 << 20) if config_file else {}
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_file}: not a config object")
    if shapes is not None:
        check_config_fits_weights({**raw, **{k: v for k, v in config_overrides.items() if type(v) is int}}, shapes,
                                  directory)
    try:
        config, model_kwargs = cls.config_class.from_pretrained(directory, return_unused_kwargs=True, **config_overrides)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{directory}: unreadable config.json ({_one_line(e)})") from None
    with dtype_guard(config.dtype or "float32"):
        model = cls(config, *(config["init_args"] or ()), **model_kwargs)
    source = os.path.join(directory, SAFE_WEIGHTS_FILE if os.path.lexists(os.path.join(directory, SAFE_WEIGHTS_FILE))
                          else SAFE_WEIGHTS_INDEX)
    if shapes is not None:  # names and shapes against the header, before the tensors are read
        match_model_weights(model, {k: _Shape(list(shape)) for k, (shape, _) in shapes.items()}, source, allow_new_head)
    weights, source = read_model_weights(directory, _dir_reader(directory))
    if model.can_generate() and os.path.isfile(os.path.join(directory, "generation_config.json")):
        model.generation_config = GenerationConfig.from_pretrained(directory)
    for note in apply_model_weights(model, weights, source, allow_new_head):
        log(note)
    return model
