"""Paddle -> Hugging Face: a model this project trained or can load (an output_dir, a checkpoint, any Paddle
model directory) written as a directory transformers' from_pretrained loads: config.json, model.safetensors, the
run's generation settings (generation_config.json) and the tokenizer, through the converter's own tables read
backwards, and optionally verified against the Paddle model before it is published.

Imports: the standard library and numpy; paddle, paddlenlp and safetensors inside; of the project `errors`,
`checkpoints` (the model directory of an output_dir, the export directory), `models.weights` (loading without
unpickling) and the other `conversion` modules.
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np

from paddle_finetune.checkpoints.export_dir import staged_export_dir
from paddle_finetune.checkpoints.listing import choose_model_dir
from paddle_finetune.conversion.architectures import (
    ARCHITECTURES,
    GENERATIVE,
    _check_layer_norm_eps,
    _require,
    build_hf_config,
    build_rules,
    expected_layer_norm_eps,
    select_hf_architecture,
)
from paddle_finetune.conversion.hf_weights import SAFETENSORS_FILE, unmap_state_dict
from paddle_finetune.conversion.to_paddle import is_hf_checkpoint_dir
from paddle_finetune.conversion.tokenizers import _read_json, has_tokenizer, write_hf_tokenizer
from paddle_finetune.errors import CheckpointError, ConversionError, VerificationError

EXPORT_REPORT = "paddle_export.json"  # what was exported from where; written with the other files
LABEL_MAP_FILE = "label_map.json"  # train_classification.py's label names (tasks.classification.LABEL_MAP_FILE)


def hf_generation_config(settings: dict, pd_config) -> dict:
    """HF generation_config.json fields for paddlenlp generate() settings (generation_settings() of
    tasks.summarization, or generate_text's), with the ids paddlenlp falls back to from the model config.

    paddlenlp's min_length counts new tokens (HF's min_new_tokens); its max_new_tokens is HF's. Its beam
    search divides a hypothesis' score by ((length + 5) / 6) ** length_penalty, HF's by length ** length_penalty:
    equal for length_penalty 0 only, so beam search in transformers may rank hypotheses differently (greedy is
    verified token for token).
    """
    def pick(key):
        value = settings.get(key)
        return value if value is not None else getattr(pd_config, key, None)

    out = {key: pick(key) for key in ("bos_token_id", "decoder_start_token_id", "eos_token_id", "pad_token_id",
                                      "forced_bos_token_id", "forced_eos_token_id")}
    if not getattr(pd_config, "is_encoder_decoder", False):
        out.pop("decoder_start_token_id")
    strategy = settings.get("decode_strategy", "greedy_search")
    out.update(max_new_tokens=int(settings.get("max_new_tokens") or 20), do_sample=strategy == "sampling",
               num_beams=int(settings.get("num_beams") or 1) if strategy == "beam_search" else 1)
    if settings.get("min_length"):
        out["min_new_tokens"] = int(settings["min_length"])
    if out["num_beams"] > 1:
        out.update(length_penalty=float(settings.get("length_penalty", 1.0)),
                   early_stopping=bool(settings.get("early_stopping", False)))
    for key, neutral in (("repetition_penalty", 1.0), ("no_repeat_ngram_size", 0)):
        if settings.get(key) not in (None, neutral):
            out[key] = settings[key]
    return out


def _numpy_state(model) -> dict:
    import paddle

    out = {}
    for name, tensor in model.state_dict().items():
        if tensor.dtype in (paddle.float16, paddle.bfloat16):
            tensor = tensor.astype("float32")  # exact; HF gets the float32 model the checks compare against
        out[name] = np.ascontiguousarray(tensor.numpy())
    return out


def load_paddle_model(src: str):
    """(model dir, why it was chosen, HF architecture, paddlenlp model in eval mode, tokenizer or None)."""
    import paddlenlp.transformers as pnt

    from paddle_finetune.models.weights import load_model_dir

    _require(os.path.isdir(src), f"{src}: not a directory.")
    try:
        model_dir, why = choose_model_dir(src)
    except Exception as e:  # noqa: BLE001 - DataError naming the directory
        raise ConversionError(str(e)) from None
    _require(not is_hf_checkpoint_dir(model_dir), f"{model_dir} is already a Hugging Face checkpoint.")
    config_path = os.path.join(model_dir, "config.json")
    try:
        paddle_class = (_read_json(config_path).get("architectures") or [None])[0]
    except ValueError as e:
        raise ConversionError(f"{config_path}: not JSON ({e})") from None
    arch = select_hf_architecture(paddle_class, model_dir)
    try:
        model = load_model_dir(getattr(pnt, paddle_class), model_dir)
    except CheckpointError as e:
        raise ConversionError(str(e)) from None
    model.eval()
    tokenizer = pnt.AutoTokenizer.from_pretrained(model_dir) if has_tokenizer(model_dir) else None
    return model_dir, why, arch, model, tokenizer


def _label_names(model_dir: str) -> Optional[dict]:
    path = os.path.join(model_dir, LABEL_MAP_FILE)
    return _read_json(path).get("id2label") if os.path.isfile(path) else None


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
        f.write("\n")


def export_hf(src: str, dst: str, generation=None, verify: bool = False, tolerance: float = 1e-4) -> dict:
    """Write the Paddle model at src as an HF directory dst; return a report dict.

    generation: paddlenlp generate() settings for BART and GPT-2, or a function (model_dir, arch, model,
    tokenizer) -> settings; default (or None from the function): the model's own generation_config.
    Raises ConversionError (nothing written) for what cannot be exported faithfully, ConfigError for a
    destination that is the source, inside it, a file or not empty, and VerificationError (nothing
    written either) when --verify finds the HF model differs beyond tolerance.
    """
    from safetensors.numpy import save_file

    started = time.time()
    model_dir, why, arch, model, tokenizer = load_paddle_model(src)
    pd_cfg = model.config
    hf_cfg = build_hf_config(arch, pd_cfg, _label_names(model_dir))
    state = _numpy_state(model)
    if arch == "BartForConditionalGeneration":
        # paddlenlp keeps its own lm_head_weight: HF ties it to the shared embedding only when they are equal.
        hf_cfg["tie_word_embeddings"] = bool(np.array_equal(state["lm_head_weight"], state["bart.shared.weight"]))
    _check_layer_norm_eps(model, expected_layer_norm_eps(arch, hf_cfg), model_dir)
    rules, ignored, placeholders = build_rules(arch, hf_cfg)
    what = f"{model_dir} ({ARCHITECTURES[arch]['paddle_class']} -> HF {arch})"
    hf_state, details = unmap_state_dict(state, rules, ignored, placeholders, what=what)
    hf_cfg["torch_dtype"] = "float32"
    gen = None
    if arch in GENERATIVE:
        settings = generation(model_dir, arch, model, tokenizer) if callable(generation) else generation
        gen = hf_generation_config(settings if settings is not None else model.generation_config.to_dict(), pd_cfg)

    report = {
        "source": os.path.abspath(src), "model_dir": os.path.abspath(model_dir), "chosen": why,
        "destination": os.path.abspath(dst), "paddle_class": ARCHITECTURES[arch]["paddle_class"],
        "architecture": arch, "model_type": hf_cfg["model_type"],
        "n_params": int(sum(int(np.prod(p.shape)) for p in model.parameters())),
        "dropped": details["dropped"], "generation_config": gen,
        "id2label": hf_cfg.get("id2label"), "tokenizer_class": None,
    }
    with staged_export_dir(dst, src, model_dir, tool="export_hf") as stage:
        _write_json(os.path.join(stage, "config.json"), hf_cfg)
        # "pt": transformers refuses safetensors metadata of other formats (paddlenlp writes "np").
        save_file(hf_state, os.path.join(stage, SAFETENSORS_FILE), metadata={"format": "pt"})
        if gen is not None:
            _write_json(os.path.join(stage, "generation_config.json"), gen)
        if tokenizer is not None:
            report["tokenizer_class"] = write_hf_tokenizer(tokenizer, stage, model_dir)
        report["files"] = sorted(os.listdir(stage)) + [EXPORT_REPORT]
        report["export_seconds"] = round(time.time() - started, 3)
        if verify:
            from paddle_finetune.conversion.verify import verify_export

            verify_started = time.time()
            report["verify"] = verify_export(stage, model, tokenizer, arch, hf_cfg, tolerance, generation=gen)
            report["verify_seconds"] = round(time.time() - verify_started, 3)
            if not report["verify"]["passed"]:
                raise VerificationError(export_failure_message(report["verify"], tolerance), report)
        _write_json(os.path.join(stage, EXPORT_REPORT), report)
    return report


def export_failure_message(v: dict, tolerance: float) -> str:
    parts = []
    if v.get("hf_loading_problems"):
        parts.append("transformers did not load every tensor: " + "; ".join(v["hf_loading_problems"]))
    if v.get("max_abs_diff", 0) > tolerance:
        parts.append(f"max abs diff {v['max_abs_diff']:.3g} > tolerance {tolerance:g}")
    for key, name in (("greedy_identical", "greedy decoding"), ("generate_identical", "generate()")):
        if v.get(key) is False:
            parts.append(f"{name} differs: HF {v[key.replace('identical', 'hf')]} vs Paddle "
                         f"{v[key.replace('identical', 'paddle')]}")
    if v.get("tokenizer_identical") is False:
        parts.append(f"tokenizers disagree: HF {v['tokenizer_hf']} vs Paddle {v['tokenizer_paddle']}")
    return "Verification failed (nothing was written): " + "; ".join(parts)
