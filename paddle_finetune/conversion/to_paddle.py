"""The conversion (`convert`), its marker file (written last: its presence means the conversion finished),
and the helpers the engine uses: is a directory an HF checkpoint, does it have a tokenizer, where is its
cached conversion (`ensure_paddle_checkpoint`).

Imports: the standard library and numpy; paddle, paddlenlp and safetensors inside; of the project `errors`,
`checkpoints.ownership` (DST_DIR: new, empty, or an earlier conversion of the same SRC_DIR) and the other
`conversion` modules.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import tempfile
import time
import uuid
from typing import List, Optional

import numpy as np

from paddle_finetune.conversion.architectures import (
    ARCHITECTURES,
    _check_layer_norm_eps,
    _require,
    build_paddle_config_kwargs,
    build_rules,
    expected_layer_norm_eps,
    select_architecture,
)
from paddle_finetune.conversion.hf_weights import (
    HF_WEIGHT_CANDIDATES,
    LEGACY_PADDLE_WEIGHTS,
    SAFETENSORS_FILE,
    find_weight_files,
    load_hf_state_dict,
    map_state_dict,
    rename_legacy_keys,
)
from paddle_finetune.conversion.tokenizers import (
    PADDLE_TOKENIZER_CLASSES,
    TOKENIZER_SIDE_FILES,
    TOKENIZER_VOCAB_FILES,
    VOCABULARY_FILES,
    _check_tokenizer_fits,
    _read_json,
    build_paddle_tokenizer,
    has_tokenizer,
)
from paddle_finetune.checkpoints.ownership import check_destination, real, record_entries
from paddle_finetune.conversion.verify import verify_conversion
from paddle_finetune.errors import ConfigError, ConversionError, VerificationError

logger = logging.getLogger("paddle_finetune.conversion")

CONVERTER_VERSION = 2
MARKER_FILE = "hf_conversion.json"
TOOL = "convert_hf_to_paddle"  # whose earlier output a DST may be (checkpoints.ownership)

# --------------------------------------------------------------------------
# Conversion.
# --------------------------------------------------------------------------
def _fingerprint(src_dir: str) -> List[list]:
    """(name, size, mtime_ns) of the files a conversion reads, to spot a changed source."""
    try:
        _, weights = find_weight_files(src_dir)
    except ConversionError:
        weights = []
    names = ["config.json"] + [os.path.basename(p) for p in weights]
    names += [n for n in HF_WEIGHT_CANDIDATES if n.endswith(".index.json")]
    # Tokenizer files too: one added to a weights-only source later triggers a reconversion.
    names += list(TOKENIZER_VOCAB_FILES + TOKENIZER_SIDE_FILES)
    out = []
    for name in sorted(set(names)):
        path = os.path.join(src_dir, name)
        if os.path.isfile(path):
            st = os.stat(path)
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


def _previous_outputs(marker: dict) -> List[str]:
    """Files an earlier conversion wrote into its destination (listed in its marker since version 2)."""
    if isinstance(marker.get("files"), list):
        return [os.path.basename(str(n)) for n in marker["files"]]
    return [LEGACY_PADDLE_WEIGHTS, *TOKENIZER_VOCAB_FILES, *TOKENIZER_SIDE_FILES]  # version 1 wrote these


def convert(
    src_dir: str, dst_dir: str, verify: bool = False, tolerance: float = 1e-4, tokenizer_dir: Optional[str] = None
) -> dict:
    """Convert src_dir (HF) into dst_dir (PaddleNLP) and return a report dict.

    The tokenizer is rebuilt from tokenizer_dir when given (an HF tokenizer
    dir), else from src_dir. A src_dir without tokenizer files (a weights-only
    export) still converts: the report's and marker's tokenizer_class and
    tokenizer_source are then None (the CLI prints no_tokenizer_message,
    ensure_paddle_checkpoint logs it). A tokenizer_dir whose tokenizer has more
    ids than the model's vocab_size is refused.

    Raises ConversionError (nothing written) if the checkpoint cannot be mapped
    faithfully, VerificationError if --verify finds outputs beyond tolerance
    (files are written but the completion marker is not).
    """
    started = time.time()
    src_dir = os.path.abspath(src_dir)
    dst_dir = os.path.abspath(dst_dir)
    _require(os.path.isdir(src_dir), f"{src_dir}: not a directory.")
    check_dst(src_dir, dst_dir, tokenizer_dir)
    if tokenizer_dir is not None:
        tokenizer_dir = os.path.abspath(tokenizer_dir)
        _require(os.path.isdir(tokenizer_dir), f"{tokenizer_dir}: tokenizer dir not found.")
        _require(has_tokenizer(tokenizer_dir), f"{tokenizer_dir}: no tokenizer files "
                                               f"(looked for {', '.join(TOKENIZER_VOCAB_FILES)}).")
    config_path = os.path.join(src_dir, "config.json")
    _require(os.path.isfile(config_path), f"{config_path}: missing (an HF checkpoint needs config.json).")
    hf_cfg = _read_json(config_path)
    arch = select_architecture(hf_cfg, config_path)
    spec = ARCHITECTURES[arch]
    try:
        config_kwargs = build_paddle_config_kwargs(arch, hf_cfg)
        rules, ignored_patterns, placeholders = build_rules(arch, hf_cfg)
    except KeyError as e:
        raise ConversionError(f"{config_path}: required field {e} is missing for {arch}.") from None
    find_weight_files(src_dir)  # fail on missing weights before the slow imports

    import paddlenlp.transformers as pnt

    tokenizer_source = tokenizer_dir or (src_dir if has_tokenizer(src_dir) else None)
    with tempfile.TemporaryDirectory() as workdir:
        tokenizer, tokenizer_class = None, None
        if tokenizer_source is not None:
            tokenizer, tokenizer_class = build_paddle_tokenizer(tokenizer_source, spec["family"], workdir)
        if tokenizer_dir is not None:
            _check_tokenizer_fits(tokenizer, tokenizer_dir, hf_cfg, config_path)

        hf_state, fmt, files = load_hf_state_dict(src_dir)
        hf_state, renamed = rename_legacy_keys(hf_state)

        model_cls = getattr(pnt, spec["paddle_class"])
        paddle_config = model_cls.config_class(**config_kwargs)
        paddle_config.dtype = "float32"
        model = model_cls(paddle_config)
        model.eval()
        _check_layer_norm_eps(model, expected_layer_norm_eps(arch, hf_cfg), spec["paddle_class"])
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        mapped, details = map_state_dict(
            hf_state, rules, ignored_patterns, placeholders, expected,
            what=f"{src_dir} ({arch} -> {spec['paddle_class']})"
        )
        del hf_state
        # numpy values go straight into Tensor.set_value (paddle 2.6 and 3.x), avoiding a
        # second full copy as paddle tensors; shapes and names were checked above.
        model.set_state_dict(mapped)
        del mapped

        check_dst(src_dir, dst_dir, tokenizer_dir)  # again, just before writing: nothing else may have appeared
        os.makedirs(dst_dir, exist_ok=True)
        previous = _read_marker(dst_dir)
        if previous is not None:
            os.remove(os.path.join(dst_dir, MARKER_FILE))  # about to overwrite: it no longer describes the files
        # Written into a stage inside dst_dir (same filesystem), then moved in: the
        # marker can list exactly the files of this conversion.
        stage = tempfile.mkdtemp(prefix=".hf_to_paddle-stage-", dir=dst_dir)
        try:
            if tokenizer is not None:
                tokenizer.save_pretrained(stage)
            # safetensors (no pickle): config.json, generation_config.json for generative
            # models and model.safetensors (sharded past paddlenlp's 10GB default).
            model.save_pretrained(stage, safe_serialization=True)
            if getattr(model, "generation_config", None) is not None:
                model.generation_config.save_pretrained(stage)
            written = sorted(os.listdir(stage))
            record_entries(dst_dir, {name: "dir" if os.path.isdir(os.path.join(stage, name)) else "file"
                                     for name in [*written, MARKER_FILE]}, tool=TOOL, source=real(src_dir))
            for name in _previous_outputs(previous) if previous else []:
                stale = os.path.join(dst_dir, name)
                if name not in written and name != MARKER_FILE and os.path.isfile(stale):
                    os.remove(stale)  # e.g. a version-1 model_state.pdparams, or a tokenizer no longer converted
            for name in written:
                os.replace(os.path.join(stage, name), os.path.join(dst_dir, name))
        finally:
            shutil.rmtree(stage, ignore_errors=True)

    n_params = int(sum(int(np.prod(p.shape)) for p in model.parameters()))
    del model
    for key, reason in details["ignored"]:
        logger.info("ignored HF key %s (%s)", key, reason)
    for name in details["placeholders"]:
        logger.info("zero-filled Paddle parameter %s (absent in HF, unused by %s outputs)", name, arch)
    report = {
        "source": src_dir,
        "destination": dst_dir,
        "architecture": arch,
        "paddle_class": spec["paddle_class"],
        "tokenizer_class": tokenizer_class,  # None: no tokenizer converted
        "tokenizer_source": tokenizer_source,
        "weights_format": fmt,
        "weight_files": [os.path.basename(f) for f in files],
        "n_params": n_params,
        "ignored_keys": [list(x) for x in details["ignored"]],
        "renamed_legacy_keys": [list(x) for x in renamed],
        "placeholders_zero_filled": details["placeholders"],
        "files": written,
        "convert_seconds": round(time.time() - started, 3),
    }
    if verify:
        verify_started = time.time()
        report["verify"] = verify_conversion(
            src_dir, dst_dir, arch, hf_cfg, tolerance, tokenizer_dir=tokenizer_source,
            source_tokenizer_dir=src_dir if tokenizer_dir is not None and has_tokenizer(src_dir) else None)
        report["verify_seconds"] = round(time.time() - verify_started, 3)
        if not report["verify"]["passed"]:
            raise VerificationError(_verify_failure_message(report["verify"], tolerance), report)

    report["converter_version"] = CONVERTER_VERSION
    report["source_fingerprint"] = _fingerprint(src_dir)
    # Written last: its presence means every other file is complete.
    with open(os.path.join(dst_dir, MARKER_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def _earlier_conversion(src_dir: str):
    """For check_destination: the names a conversion from before ownership records wrote into a DST, when its
    marker says it converted this very SRC (real paths)."""
    def names(dst: str):
        marker = _read_marker(dst)
        if not marker or not isinstance(marker.get("source"), str) or real(marker["source"]) != real(src_dir):
            return None
        # what it listed (or, before lists, version 1's stale names) and what every conversion writes
        return {*_previous_outputs(marker), MARKER_FILE, "config.json", "generation_config.json", SAFETENSORS_FILE}
    return names


def check_dst(src_dir: str, dst_dir: str, tokenizer_dir: Optional[str] = None) -> None:
    """DST must be new or empty, or an earlier conversion of the same SRC holding nothing else; never SRC, the
    --tokenizer dir, inside one or holding one (real paths: a DST that is a symlink to SRC is SRC).
    ConversionError in one line otherwise; nothing is touched."""
    try:
        check_destination(dst_dir, tool=TOOL, source=src_dir, what="DST_DIR",
                          inputs=[("the --tokenizer dir", tokenizer_dir)] if tokenizer_dir else [],
                          earlier=_earlier_conversion(src_dir))
    except ConfigError as e:
        raise ConversionError(str(e)) from None


def _verify_failure_message(v: dict, tolerance: float) -> str:
    parts = []
    if v["max_abs_diff"] > tolerance:
        parts.append(f"max abs diff {v['max_abs_diff']:.3g} > tolerance {tolerance:g}")
    if v.get("greedy_identical") is False:
        parts.append(f"greedy generations differ: HF {v['greedy_hf']} vs Paddle {v['greedy_paddle']}")
    if v.get("tokenizer_identical") is False:
        parts.append(f"tokenizers disagree: HF {v['tokenizer_hf']} vs Paddle {v['tokenizer_paddle']}")
    if v.get("tokenizer_matches_source") is False:
        parts.append(f"the --tokenizer dir tokenizes differently from SRC_DIR's own tokenizer: {v['tokenizer_hf']} vs "
                     f"{v['tokenizer_source']}")
    return "Verification failed: " + "; ".join(parts)

# --------------------------------------------------------------------------
# Trainer-facing helpers.
# --------------------------------------------------------------------------
def _safetensors_format(path: str) -> Optional[str]:
    """The "format" in a safetensors file's metadata (HF writes "pt", paddlenlp "np"), read with the stdlib."""
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > 100_000_000:  # safetensors' own limit; not a safetensors file
                return None
            header = json.loads(f.read(header_len))
    except (OSError, ValueError, struct.error):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta.get("format") if isinstance(meta, dict) else None


def is_hf_checkpoint_dir(path: str) -> bool:
    """A local dir with an HF-format config.json and HF weights, not a paddlenlp (or converted) one.

    Both kinds may hold config.json and model.safetensors. A Paddle dir is told
    apart by any of: this converter's hf_conversion.json, a model_state.pdparams,
    "paddlenlp_version" in config.json (paddlenlp writes it into every config it
    saves; HF writes "transformers_version"), or model.safetensors metadata
    format "np"/"pd" (paddlenlp's; HF writes "pt", and paddlenlp refuses to load "pt").
    """
    if not path or not os.path.isdir(path):
        return False
    if any(os.path.exists(os.path.join(path, name)) for name in (MARKER_FILE, LEGACY_PADDLE_WEIGHTS)):
        return False
    try:
        cfg = _read_json(os.path.join(path, "config.json"))
    except (OSError, ValueError):
        return False
    if not cfg or "paddlenlp_version" in cfg or not ("model_type" in cfg or "architectures" in cfg):
        return False
    safetensors = os.path.join(path, SAFETENSORS_FILE)
    if os.path.isfile(safetensors) and _safetensors_format(safetensors) in ("np", "pd"):
        return False
    return any(os.path.isfile(os.path.join(path, name)) for name in HF_WEIGHT_CANDIDATES)


def no_tokenizer_message(model_dir: str, converted_dir: Optional[str] = None) -> str:
    """What to tell a user whose model dir has no tokenizer (``has_tokenizer(model_dir)`` is False).

    model_dir is an HF checkpoint dir or a converted one (whose marker names
    its source); converted_dir, if known, is where the conversion goes (default:
    model_dir itself when it is a conversion, else default_cache_dir). The
    message names the source, the vocabulary files its architecture can use
    and the converter command that takes a tokenizer from another dir.
    """
    marker = _read_marker(model_dir)
    if marker and marker.get("source"):
        src, dst = marker["source"], converted_dir or model_dir
    else:
        src = model_dir
        dst = converted_dir or (default_cache_dir(src) if is_hf_checkpoint_dir(src) else None)
    try:
        cfg = _read_json(os.path.join(src, "config.json"))
        arch = select_architecture(cfg)
    except (OSError, ValueError, ConversionError):
        cfg, arch = {}, None
    family = ARCHITECTURES[arch]["family"] if arch else None
    kinds = [VOCABULARY_FILES[k] for f, k in PADDLE_TOKENIZER_CLASSES if f == family] or list(VOCABULARY_FILES.values())
    which = f"a {arch} tokenizer" if arch else "a tokenizer"
    if isinstance(cfg.get("vocab_size"), int):
        which += f" (vocab_size={cfg['vocab_size']})"
    message = (f"{src} has no tokenizer files, so no tokenizer was converted. It needs {which}: "
               f"put {' or '.join(kinds)} or a tokenizer.json there")
    if dst:
        message += (f", or convert it with a tokenizer from an HF tokenizer dir: "
                    f"python tools/convert_hf_to_paddle.py {src} {dst} --tokenizer DIR")
    return message + "."


def _read_marker(dst: str) -> Optional[dict]:
    try:
        return _read_json(os.path.join(dst, MARKER_FILE)) or None
    except (OSError, ValueError):
        return None


def _marker_matches(marker: Optional[dict], src: str) -> bool:
    return (
        marker is not None
        and marker.get("converter_version") == CONVERTER_VERSION
        and marker.get("source_fingerprint") == _fingerprint(src)
    )


def default_cache_dir(name_or_path: str) -> str:
    src = os.path.abspath(name_or_path.rstrip(os.sep))
    return os.path.join(os.path.dirname(src), os.path.basename(src) + "-paddle")


def ensure_paddle_checkpoint(name_or_path: str, cache_dir: Optional[str] = None) -> str:
    """Return a directory paddlenlp's from_pretrained can load.

    If name_or_path is an HF checkpoint dir, convert it once into cache_dir
    (default: a sibling "<name>-paddle" dir) and return that; later calls reuse
    it while its completion marker matches the source files. Anything else
    (a paddlenlp dir, a model name) is returned unchanged.

    A source without tokenizer files still converts (with a warning); check
    ``has_tokenizer(returned_dir)`` and report ``no_tokenizer_message(returned_dir)``.
    """
    if not is_hf_checkpoint_dir(name_or_path):
        return name_or_path
    src = os.path.abspath(name_or_path)
    dst = os.path.abspath(cache_dir) if cache_dir else default_cache_dir(src)
    if _marker_matches(_read_marker(dst), src):
        logger.info("Using converted Paddle checkpoint %s (from HF checkpoint %s)", dst, src)
        return dst
    if os.path.exists(dst) and _read_marker(dst) is None:
        raise ConversionError(
            f"{dst} exists but is not a completed conversion of {src}; remove it or pass another cache_dir."
        )
    check_dst(src, dst)  # a conversion of another source, or one with files of someone else's, is never replaced

    logger.warning("Converting HF checkpoint %s -> Paddle checkpoint %s (one-time)", src, dst)
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    # Build next to dst and rename: readers never see a half-written directory,
    # and concurrent ranks converting at once cannot corrupt each other.
    tmp = os.path.join(parent, f".{os.path.basename(dst)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        convert(src, tmp)
        if _marker_matches(_read_marker(dst), src):  # another rank finished meanwhile
            logger.info("Another process finished converting %s first; using it", dst)
            return dst
        if os.path.exists(dst):  # a stale conversion of ours (marker present but outdated)
            stale = tmp + ".stale"
            os.rename(dst, stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, dst)
        except OSError:
            if not _marker_matches(_read_marker(dst), src):  # not another rank's finished result
                raise
            logger.info("Another process finished converting %s first; using it", dst)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.warning("Converted checkpoint written to %s", dst)
    if not has_tokenizer(dst):
        logger.warning("%s", no_tokenizer_message(dst))
    return dst
