"""Reading HF weights (safetensors with numpy only; .bin through torch.load(weights_only=True)), and mapping
them onto Paddle names (pure: numpy in, numpy out): every HF key consumed or known-ignored, every Paddle
parameter filled, every shape agreed. The same tables read the other way (unmap_state_dict) give the HF
tensors of a Paddle model, checked by mapping them forward again.

Imports: the standard library and numpy; safetensors and torch inside; of the project `errors` and
`conversion.architectures`.
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from paddle_finetune.conversion.architectures import (
    COPY,
    LEGACY_RENAMES,
    QKV,
    TRANSPOSE,
    Rule,
    _require,
)
from paddle_finetune.errors import ConversionError



SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
BIN_FILE = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"
# Preference order: safetensors never needs torch and never unpickles.
HF_WEIGHT_CANDIDATES = (SAFETENSORS_FILE, SAFETENSORS_INDEX, BIN_FILE, BIN_INDEX)
# What convert writes: paddlenlp's save_pretrained(safe_serialization=True) file name,
# which its from_pretrained tries before the pickled model_state.pdparams.
PADDLE_WEIGHTS = SAFETENSORS_FILE
LEGACY_PADDLE_WEIGHTS = "model_state.pdparams"  # converter version 1, and paddlenlp's default save

# --------------------------------------------------------------------------
# Reading HF weights (never unpickles arbitrary objects).
# --------------------------------------------------------------------------
def find_weight_files(src_dir: str) -> Tuple[str, List[str]]:
    """Return (format, files) for the preferred weights in src_dir."""
    for name in HF_WEIGHT_CANDIDATES:
        path = os.path.join(src_dir, name)
        if not os.path.isfile(path):
            continue
        fmt = "safetensors" if name.startswith("model.safetensors") else "bin"
        if not name.endswith(".index.json"):
            return fmt, [path]
        with open(path, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
        _require(isinstance(weight_map, dict) and weight_map, f"{path}: no 'weight_map' in the shard index.")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not os.path.isfile(os.path.join(src_dir, s))]
        _require(not missing, f"{path}: shard file(s) listed in the index are missing: {', '.join(missing)}")
        return fmt, [os.path.join(src_dir, s) for s in shards]
    raise ConversionError(
        f"{src_dir}: no HF weights found (looked for {', '.join(HF_WEIGHT_CANDIDATES)})."
    )


def _as_float32(array: np.ndarray) -> np.ndarray:
    # Paddle models are built in float32; half-precision checkpoints are upcast
    # (exact), so verification compares like with like.
    if array.dtype.kind == "f" and array.dtype != np.float32:
        return array.astype(np.float32)
    return array


def _read_bf16_safetensors(path: str, keys: Iterable[str]) -> Dict[str, np.ndarray]:
    # numpy has no bfloat16; read the raw bytes ourselves (bf16 is the top half of fp32).
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        out = {}
        for key in keys:
            info = header[key]
            start, end = info["data_offsets"]
            f.seek(8 + header_len + start)
            raw = np.frombuffer(f.read(end - start), dtype="<u2")
            out[key] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])
    return out


def _load_safetensors(path: str) -> Dict[str, np.ndarray]:
    from safetensors import safe_open

    out: Dict[str, np.ndarray] = {}
    bf16: List[str] = []
    with safe_open(path, framework="np") as f:
        for key in f.keys():
            if f.get_slice(key).get_dtype() == "BF16":
                bf16.append(key)
            else:
                out[key] = _as_float32(f.get_tensor(key))
    out.update(_read_bf16_safetensors(path, bf16))
    return out


def _load_bin(path: str) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise ConversionError(
            f"{path} is a PyTorch pickle and reading it needs torch, which is not installed. "
            f"Install torch, or re-save the checkpoint as safetensors (model.safetensors), which needs no torch."
        ) from None
    try:
        # weights_only=True: only tensors and plain containers are unpickled.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TypeError as e:
        raise ConversionError(f"{path}: this torch ({torch.__version__}) has no weights_only=True loading; "
                              f"refusing to unpickle it unsafely. Upgrade torch or use safetensors.") from e
    except Exception as e:
        raise ConversionError(f"{path}: could not be read as a weights-only PyTorch checkpoint: {e}") from e
    _require(isinstance(state, dict), f"{path}: expected a state dict, got {type(state).__name__}.")
    out = {}
    for key, tensor in state.items():
        _require(isinstance(tensor, torch.Tensor), f"{path}: entry {key!r} is not a tensor.")
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        out[key] = _as_float32(tensor.numpy())
    return out


def load_hf_state_dict(src_dir: str) -> Tuple[Dict[str, np.ndarray], str, List[str]]:
    fmt, files = find_weight_files(src_dir)
    loader = _load_safetensors if fmt == "safetensors" else _load_bin
    state: Dict[str, np.ndarray] = {}
    for path in files:
        part = loader(path)
        dupes = sorted(set(part) & set(state))
        _require(not dupes, f"{path}: key(s) also present in another shard: {', '.join(dupes[:10])}")
        state.update(part)
    index = os.path.join(src_dir, SAFETENSORS_INDEX if fmt == "safetensors" else BIN_INDEX)
    if len(files) > 1 or os.path.basename(files[0]) not in (SAFETENSORS_FILE, BIN_FILE):
        with open(index, encoding="utf-8") as f:
            listed = set(json.load(f)["weight_map"])
        absent = sorted(listed - set(state))
        _require(
            not absent, f"{index}: key(s) listed in the index but absent from the shards: {', '.join(absent[:10])}"
        )
    return state, fmt, files


# --------------------------------------------------------------------------
# Mapping (pure: numpy in, numpy out).
# --------------------------------------------------------------------------
def apply_op(op: str, array: np.ndarray) -> np.ndarray:
    if op == COPY:
        return array
    if op == TRANSPOSE:
        _require(array.ndim == 2, f"cannot transpose a {array.ndim}-d tensor")
        return np.ascontiguousarray(array.T)
    if op in QKV:
        return np.ascontiguousarray(np.split(array, 3, axis=-1)[QKV.index(op)])
    raise ValueError(f"unknown op {op!r}")


def rename_legacy_keys(state: Dict[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], List[Tuple[str, str]]]:
    renamed = []
    out = {}
    for key, value in state.items():
        new = key
        for pattern, repl in LEGACY_RENAMES:
            new = re.sub(pattern, repl, new)
        if new != key:
            renamed.append((key, new))
        out[new] = value
    return out, renamed


def map_state_dict(
    hf_state: Dict[str, np.ndarray],
    rules: Sequence[Rule],
    ignored_patterns: Sequence[Tuple[str, str]],
    placeholders: Sequence[str],
    expected_shapes: Dict[str, Tuple[int, ...]],
    what: str = "checkpoint",
) -> Tuple[Dict[str, np.ndarray], dict]:
    """Apply the table; raise ConversionError listing every problem at once."""
    out: Dict[str, np.ndarray] = {}
    consumed = set()
    unfilled, tie_errors, mismatches = [], [], []
    for pd_name, hf_names, op in rules:
        present = [n for n in hf_names if n in hf_state]
        if not present:
            unfilled.append(f"{pd_name} (from HF {' / '.join(hf_names)}: not in checkpoint)")
            continue
        first = hf_state[present[0]]
        for other in present[1:]:
            if hf_state[other].shape != first.shape or not np.array_equal(hf_state[other], first):
                msg = f"{present[0]} != {other} (HF ties them; paddlenlp needs one value for {pd_name})"
                if msg not in tie_errors:
                    tie_errors.append(msg)
        consumed.update(present)
        try:
            out[pd_name] = apply_op(op, first)
        except ConversionError as e:
            mismatches.append(f"{pd_name}: HF {present[0]} {list(first.shape)}: {e}")

    filled_placeholders = []
    for name in placeholders:
        if name not in out and name in expected_shapes:
            out[name] = np.zeros(expected_shapes[name], dtype=np.float32)
            filled_placeholders.append(name)
            unfilled = [u for u in unfilled if not u.startswith(name + " ")]

    ignored, unmapped = [], []
    for key in sorted(hf_state):
        if key in consumed:
            continue
        reason = next((r for p, r in ignored_patterns if re.search(p, key)), None)
        (ignored.append((key, reason)) if reason else unmapped.append(key))

    missing = sorted(set(expected_shapes) - set(out))
    already = {u.split(" ", 1)[0] for u in unfilled}
    unfilled += [f"{name} (no rule in the table)" for name in missing if name not in already]
    extra = sorted(set(out) - set(expected_shapes))
    by_rule = {r[0]: r for r in rules}
    for name in sorted(set(out) & set(expected_shapes)):
        if tuple(out[name].shape) != tuple(expected_shapes[name]):
            _, hf_names, op = by_rule.get(name, (name, ("<placeholder>",), COPY))
            src = next((n for n in hf_names if n in hf_state), hf_names[0])
            src_shape = list(hf_state[src].shape) if src in hf_state else "?"
            mismatches.append(
                f"{name}: HF {src} {src_shape} ({op}) -> {list(out[name].shape)}, Paddle expects "
                f"{list(expected_shapes[name])}"
            )

    problems = []
    if unmapped:
        problems.append(f"HF keys not mapped to any Paddle parameter ({len(unmapped)}): " + ", ".join(unmapped))
    if unfilled:
        problems.append(f"Paddle parameters left unfilled ({len(unfilled)}): " + "; ".join(unfilled))
    if extra:
        problems.append(f"table names Paddle parameters the model does not have ({len(extra)}): " + ", ".join(extra))
    if mismatches:
        problems.append(f"shape mismatches ({len(mismatches)}): " + "; ".join(mismatches))
    if tie_errors:
        problems.append(f"tied weights differ ({len(tie_errors)}): " + "; ".join(tie_errors))
    if problems:
        raise ConversionError(f"Cannot convert {what}:\n  " + "\n  ".join(problems) + "\nNothing was written.")
    return out, {"ignored": ignored, "placeholders": filled_placeholders}


def unmap_state_dict(
    paddle_state: Dict[str, np.ndarray],
    rules: Sequence[Rule],
    ignored_patterns: Sequence[Tuple[str, str]],
    placeholders: Sequence[str],
    what: str = "model",
) -> Tuple[Dict[str, np.ndarray], dict]:
    """The same table read Paddle -> HF: each rule writes its first HF name (see architectures.py).

    Refuses (ConversionError, every problem at once) a Paddle parameter no rule reads, a rule whose
    parameter is missing, and tied Paddle parameters that differ (HF would keep one value). The result is
    then mapped forward again with map_state_dict and must give back every Paddle tensor bit for bit.
    """
    out: Dict[str, np.ndarray] = {}
    sources: Dict[str, str] = {}
    qkv: Dict[str, Dict[int, np.ndarray]] = {}
    missing, tie_errors = [], []
    for pd_name, hf_names, op in rules:
        if pd_name in placeholders:
            continue  # a Paddle parameter the HF architecture does not have (zero-filled HF -> Paddle)
        if pd_name not in paddle_state:
            missing.append(pd_name)
            continue
        value = paddle_state[pd_name]
        target = hf_names[0]
        if op in QKV:
            qkv.setdefault(target, {})[QKV.index(op)] = value
            continue
        value = apply_op(op, value)  # COPY and TRANSPOSE are their own inverses
        if target in out:
            if out[target].shape != value.shape or not np.array_equal(out[target], value):
                tie_errors.append(f"{sources[target]} != {pd_name} (both are HF {target})")
            continue
        out[target], sources[target] = value, pd_name
    for target, parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            missing.append(f"{target} (q/k/v slices)")
            continue
        out[target] = np.ascontiguousarray(np.concatenate([parts[i] for i in range(3)], axis=-1))
    read = {r[0] for r in rules} | set(placeholders)
    unread = sorted(set(paddle_state) - read)
    problems = []
    if unread:
        problems.append(f"Paddle parameters no HF name is mapped from ({len(unread)}): " + ", ".join(unread))
    if missing:
        problems.append(f"parameters the table needs but the model lacks ({len(missing)}): " + ", ".join(missing))
    if tie_errors:
        problems.append(f"tied in HF but different in Paddle ({len(tie_errors)}): " + "; ".join(tie_errors))
    if problems:
        raise ConversionError(f"Cannot export {what}:\n  " + "\n  ".join(problems) + "\nNothing was written.")

    # Read both ways: the HF tensors must map forward onto exactly the Paddle ones.
    expected = {k: tuple(v.shape) for k, v in paddle_state.items()}
    back, _ = map_state_dict(out, rules, ignored_patterns, placeholders, expected, what=f"{what} (read back)")
    dropped = [name for name in placeholders if name in paddle_state]
    changed = [k for k in paddle_state if k not in dropped and not np.array_equal(back[k], paddle_state[k])]
    _require(not changed, f"{what}: the HF tensors do not read back as the Paddle ones: {', '.join(changed)}")
    return out, {"dropped": dropped}
