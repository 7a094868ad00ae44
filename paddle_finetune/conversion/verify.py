"""Verification: the HF model (torch) and the Paddle model on identical padded inputs, both ways (a conversion
HF -> Paddle, an export Paddle -> HF): logits, greedy generation and tokenizer ids compared within a tolerance.

Imports: the standard library and numpy; torch, transformers, paddle and paddlenlp inside; of the project
`errors` and the other `conversion` modules.
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from paddle_finetune.conversion.architectures import (
    ARCHITECTURES,
    GENERATIVE,
    _check_layer_norm_eps,
    expected_layer_norm_eps,
)
from paddle_finetune.conversion.hf_weights import load_hf_state_dict, rename_legacy_keys
from paddle_finetune.conversion.tokenizers import has_tokenizer
from paddle_finetune.errors import ConversionError, VerificationError

logger = logging.getLogger("paddle_finetune.conversion")

# --------------------------------------------------------------------------
# Verification: HF (torch) vs converted Paddle on identical padded inputs.
# --------------------------------------------------------------------------
VERIFY_TEXT = "Hello world! The quick brown fox jumps over the lazy dog."
GREEDY_STEPS = 8


def _random_inputs(cfg: dict, family: str, seed: int, length: int = 12) -> dict:
    rng = np.random.RandomState(seed)
    vocab = cfg["vocab_size"]
    special = {cfg.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")}
    pool = np.array([i for i in range(min(5, vocab - 1), vocab) if i not in special])
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions") or 512
    # RoBERTa positions start at pad_token_id + 1; GPT-2 greedy decoding appends GREEDY_STEPS tokens.
    reserved = {"roberta": (cfg.get("pad_token_id") or 1) + 1, "gpt2": GREEDY_STEPS}.get(family, 0)
    length = max(2, min(length, max_pos - reserved))
    ids = rng.choice(pool, size=(2, length)).astype("int64")
    mask = np.ones_like(ids)
    mask[1, length - length // 3:] = 0  # right padding on the second row
    pad = cfg.get("pad_token_id")
    ids[mask == 0] = pad if pad is not None else cfg.get("eos_token_id", 0)
    out = {"input_ids": ids, "attention_mask": mask}
    if family == "bart":
        dec = rng.choice(pool, size=(2, max(2, length // 2))).astype("int64")
        dec[:, 0] = cfg.get("decoder_start_token_id", 2)
        out["decoder_input_ids"] = dec
    return out


def _output_names(arch: str) -> Tuple[str, ...]:
    if arch in ("BertModel", "RobertaModel"):
        return ("last_hidden_state", "pooler_output")
    return ("last_hidden_state",) if arch == "BartModel" else ("logits",)


def _hf_forward(model, arch: str, inputs: dict) -> Dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    return {name: getattr(out, name).float().numpy() for name in _output_names(arch)}


def _paddle_forward(model, arch: str, inputs: dict) -> Dict[str, np.ndarray]:
    import paddle

    with paddle.no_grad():
        out = model(**{k: paddle.to_tensor(v) for k, v in inputs.items()})
    # paddlenlp returns a bare tensor or a tuple ordered like the HF outputs.
    outs = [out] if isinstance(out, paddle.Tensor) else list(out)
    return {name: outs[i].astype("float32").numpy() for i, name in enumerate(_output_names(arch))}


def _greedy(
    step: Callable[[dict], np.ndarray], inputs: dict, family: str, cfg: dict, steps: int = GREEDY_STEPS
) -> List[list]:
    """Step-by-step greedy decoding without a cache: the same loop drives both frameworks."""
    if family == "bart":
        enc = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        dec = np.full((inputs["input_ids"].shape[0], 1), cfg.get("decoder_start_token_id", 2), dtype="int64")
        for _ in range(steps):
            logits = step(dict(enc, decoder_input_ids=dec))
            dec = np.concatenate([dec, logits[:, -1].argmax(-1)[:, None].astype("int64")], axis=1)
        return dec[:, 1:].tolist()
    # Causal LM: left-pad the prompt so every row continues from its last real token.
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    lengths = mask.sum(1)
    width = ids.shape[1]
    left_ids = np.full_like(ids, ids[mask == 0][0] if (mask == 0).any() else 0)
    left_mask = np.zeros_like(mask)
    for row, n in enumerate(lengths):
        left_ids[row, width - n:] = ids[row, :n]
        left_mask[row, width - n:] = 1
    ids, mask = left_ids, left_mask
    generated = []
    for _ in range(steps):
        position_ids = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype("int64")
        logits = step({"input_ids": ids, "attention_mask": mask, "position_ids": position_ids})
        nxt = logits[:, -1].argmax(-1).astype("int64")
        generated.append(nxt)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        mask = np.concatenate([mask, np.ones_like(nxt)[:, None]], axis=1)
    return np.stack(generated, axis=1).tolist()


def _align_hf_model_with_checkpoint(hf_model, src_dir: str) -> List[str]:
    """Make the HF reference hold exactly the stored tensors; return the keys it had not.

    transformers' from_pretrained can drop stored values of tied tensors (e.g.
    4.46 re-initialises RobertaForMaskedLM's lm_head.bias when reloading from
    safetensors). The conversion is checked against the checkpoint's contents,
    and any such reload discrepancy is reported rather than hidden.
    """
    import torch

    stored, _, _ = load_hf_state_dict(src_dir)
    stored, _ = rename_legacy_keys(stored)
    current = hf_model.state_dict()
    fixes = {}
    for key, value in stored.items():
        ref = current.get(key)
        if ref is None or not ref.is_floating_point() or tuple(ref.shape) != value.shape:
            continue
        if not np.array_equal(ref.detach().float().numpy(), value):
            fixes[key] = torch.from_numpy(np.ascontiguousarray(value)).to(ref.dtype)
    if fixes:
        logger.warning(
            "transformers' from_pretrained did not reproduce stored tensor(s) %s; "
            "verifying against the stored values", ", ".join(sorted(fixes)),
        )
        hf_model.load_state_dict(fixes, strict=False)
    return sorted(fixes)


def verify_conversion(
    src_dir: str, dst_dir: str, arch: str, hf_cfg: dict, tolerance: float = 1e-4, tokenizer_dir: Optional[str] = None,
    source_tokenizer_dir: Optional[str] = None,
) -> dict:
    """Run the HF model from src_dir and the Paddle one from dst_dir on the same random padded ids.

    The tokenizers are compared too (HF from tokenizer_dir, default src_dir)
    unless dst_dir holds no tokenizer, in which case only that comparison is
    skipped and result["tokenizer_check"] says so. With source_tokenizer_dir
    (SRC's own tokenizer, when another one was converted with --tokenizer), the
    HF tokenizer of tokenizer_dir must also give the same ids as SRC's own.
    """
    transformers = _import_hf()
    import paddlenlp.transformers as pnt

    hf_model = _load_hf_model(src_dir, arch)
    reload_mismatches = _align_hf_model_with_checkpoint(hf_model, src_dir)
    pd_model = getattr(pnt, ARCHITECTURES[arch]["paddle_class"]).from_pretrained(dst_dir)
    pd_model.eval()
    _check_layer_norm_eps(pd_model, expected_layer_norm_eps(arch, hf_cfg), f"{dst_dir} (reloaded)")
    result = compare_models(hf_model, pd_model, arch, hf_cfg, tolerance)
    result["hf_reload_mismatches"] = reload_mismatches
    passed = result.pop("passed")

    if not has_tokenizer(dst_dir):
        result["tokenizer_check"] = "skipped: no tokenizer was converted (model outputs compared on random ids)"
        result["passed"] = bool(passed)
        return result
    try:
        hf_tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir or src_dir, local_files_only=True)
    except Exception as e:  # the HF side may lack a loadable tokenizer; the paddle one was built anyway
        result["tokenizer_check"] = f"skipped: HF tokenizer did not load ({e})"
    else:
        result.update(compare_tokenizers(hf_tok, pnt.AutoTokenizer.from_pretrained(dst_dir), [VERIFY_TEXT]))
        passed = passed and result["tokenizer_identical"]
        if source_tokenizer_dir is not None:
            try:
                source_tok = transformers.AutoTokenizer.from_pretrained(source_tokenizer_dir, local_files_only=True)
            except Exception as e:  # noqa: BLE001 - SRC's own tokenizer may not load in transformers
                result["tokenizer_source_check"] = f"skipped: SRC_DIR's own tokenizer did not load ({e})"
            else:
                result["tokenizer_source"] = source_tok(VERIFY_TEXT)["input_ids"]
                result["tokenizer_matches_source"] = result["tokenizer_source"] == result["tokenizer_hf"]
                passed = passed and result["tokenizer_matches_source"]
    result["passed"] = bool(passed)
    return result


def _import_hf():
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as e:
        raise ConversionError(f"--verify needs torch and transformers to run the HF model: {e}") from None
    return transformers


def _load_hf_model(hf_dir: str, arch: str, loading_info: bool = False):
    import torch
    import transformers

    torch.manual_seed(0)
    hf_cls = getattr(transformers, arch)
    kwargs = {"local_files_only": True, "output_loading_info": loading_info}
    try:
        # eager = the reference attention math, no fused-kernel rounding differences
        loaded = hf_cls.from_pretrained(hf_dir, attn_implementation="eager", **kwargs)
    except TypeError:  # transformers too old to know attn_implementation
        loaded = hf_cls.from_pretrained(hf_dir, **kwargs)
    (loaded[0] if loading_info else loaded).eval()  # dropout off
    return loaded


def compare_models(hf_model, pd_model, arch: str, hf_cfg: dict, tolerance: float) -> dict:
    """Both models on the same random padded ids: the largest difference per output, and for generative
    models the step-by-step greedy decoding of each (the same loop drives both)."""
    family = ARCHITECTURES[arch]["family"]
    inputs = _random_inputs(hf_cfg, family, seed=0)
    hf_out = _hf_forward(hf_model, arch, inputs)
    pd_out = _paddle_forward(pd_model, arch, inputs)
    diffs = {}
    for name in _output_names(arch):
        if hf_out[name].shape != pd_out[name].shape:
            raise VerificationError(
                f"{name} shapes differ: HF {hf_out[name].shape} vs Paddle {pd_out[name].shape}", {}
            )
        diff = np.abs(hf_out[name] - pd_out[name])
        if diff.ndim == 3 and family != "bart":
            # Outputs at padded encoder/prompt positions are undefined; compare real tokens only.
            diff = diff[inputs["attention_mask"].astype(bool)]
        diffs[name] = float(diff.max())
    result = {
        "compared": ", ".join(diffs),
        "max_abs_diff": max(diffs.values()),
        "max_abs_diff_per_output": diffs,
        "tolerance": tolerance,
        "input_shape": list(inputs["input_ids"].shape),
        "padded_tokens": int((inputs["attention_mask"] == 0).sum()),
    }
    passed = result["max_abs_diff"] <= tolerance
    if arch in GENERATIVE:
        result["greedy_hf"] = _greedy(lambda x: _hf_forward(hf_model, arch, x)["logits"], inputs, family, hf_cfg)
        result["greedy_paddle"] = _greedy(
            lambda x: _paddle_forward(pd_model, arch, x)["logits"], inputs, family, hf_cfg
        )
        result["greedy_identical"] = result["greedy_hf"] == result["greedy_paddle"]
        passed = passed and result["greedy_identical"]
    result["passed"] = bool(passed)
    return result


def compare_tokenizers(hf_tok, pd_tok, texts: List[str]) -> dict:
    hf_ids = [hf_tok(text)["input_ids"] for text in texts]
    pd_ids = [pd_tok(text)["input_ids"] for text in texts]
    # One text keeps the report's shape of a single id list; several are listed per text.
    return {"tokenizer_texts": texts, "tokenizer_hf": hf_ids if len(texts) > 1 else hf_ids[0],
            "tokenizer_paddle": pd_ids if len(texts) > 1 else pd_ids[0], "tokenizer_identical": hf_ids == pd_ids}


def sample_texts(tokenizer, n_tokens: int = 40) -> List[str]:
    """Texts to compare two tokenizers on: the fixed sentence, and one made of the vocabulary's own tokens
    (a character vocabulary built from Chinese training texts turns the sentence into [UNK]s)."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    special = {str(v) for v in (getattr(tokenizer, "special_tokens_map", None) or {}).values()}
    words = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])
             if t not in special and not t.startswith(("##", "[unused", "<|", "[")) and t.strip()]
    picked = words[:: max(1, len(words) // n_tokens)][:n_tokens]
    try:
        own = tokenizer.convert_tokens_to_string(picked)
    except Exception:  # noqa: BLE001 - a tokenizer without a detokenizer still has words
        own = " ".join(picked)
    return [VERIFY_TEXT, own] if own.strip() else [VERIFY_TEXT]


def _trim(row, eos) -> list:
    row = [int(t) for t in row]
    return row[: row.index(eos) + 1] if eos in row else row


def compare_generate(hf_model, pd_model, arch: str, hf_cfg: dict, generation: dict, hf_dir: str) -> dict:
    """generate() of both libraries, greedy, with the exported generation config on the HF side and the same
    settings on the Paddle side: token for token up to each row's eos. BART decodes a padded batch; GPT-2
    one prompt at a time (paddlenlp's GPT ignores the attention mask in generate)."""
    import paddle
    import torch
    import transformers

    family = ARCHITECTURES[arch]["family"]
    inputs = _random_inputs(hf_cfg, family, seed=1)
    hf_gen = transformers.GenerationConfig.from_pretrained(hf_dir)
    hf_gen.num_beams, hf_gen.do_sample = 1, False
    eos = generation["eos_token_id"]
    pd_kwargs = dict(max_new_tokens=generation["max_new_tokens"], min_new_tokens=generation.get("min_new_tokens", 0),
                     decode_strategy="greedy_search", eos_token_id=eos, pad_token_id=generation["pad_token_id"],
                     forced_eos_token_id=generation.get("forced_eos_token_id"),
                     forced_bos_token_id=generation.get("forced_bos_token_id"), use_cache=True)
    if family == "bart":
        pd_kwargs["decoder_start_token_id"] = generation["decoder_start_token_id"]
        rows = [(inputs["input_ids"], inputs["attention_mask"])]
    else:
        rows = [(ids[mask.astype(bool)][None, :], np.ones((1, int(mask.sum())), "int64"))
                for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
    hf_rows, pd_rows = [], []
    for ids, mask in rows:
        with torch.no_grad():
            out = hf_model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                    generation_config=hf_gen).numpy()
        hf_rows += [_trim(r, eos) for r in out[:, 1 if family == "bart" else ids.shape[1]:]]
        # As prediction calls it: summarization with its float mask, generate_text with the prompt alone.
        pd_mask = {"attention_mask": paddle.to_tensor(mask.astype("float32"))} if family == "bart" else {}
        with paddle.no_grad():
            generated, _ = pd_model.generate(input_ids=paddle.to_tensor(ids), **pd_mask, **pd_kwargs)
        pd_rows += [_trim(r, eos) for r in generated.numpy()]
    return {"generate_hf": hf_rows, "generate_paddle": pd_rows, "generate_identical": hf_rows == pd_rows}


def verify_export(hf_dir: str, pd_model, pd_tokenizer, arch: str, hf_cfg: dict, tolerance: float = 1e-4,
                  generation: Optional[dict] = None) -> dict:
    """An exported HF directory against the Paddle model it came from: transformers must load every tensor
    (nothing missing, unexpected or re-initialised), logits within tolerance, the same greedy decoding
    (step by step, and through each library's generate() with the exported settings), and the same token
    ids for sample texts (one built from the vocabulary itself)."""
    transformers = _import_hf()
    hf_model, info = _load_hf_model(hf_dir, arch, loading_info=True)
    problems = [f"{kind} {', '.join(sorted(map(str, keys)))}" for kind, keys in info.items() if keys]
    result = compare_models(hf_model, pd_model, arch, hf_cfg, tolerance)
    result["hf_loading_problems"] = problems
    passed = result.pop("passed") and not problems
    if arch in GENERATIVE and generation is not None:
        result.update(compare_generate(hf_model, pd_model, arch, hf_cfg, generation, hf_dir))
        passed = passed and result["generate_identical"]
    if pd_tokenizer is None:
        result["tokenizer_check"] = "skipped: the model has no tokenizer (model outputs compared on random ids)"
    else:
        hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
        result["hf_tokenizer_class"] = type(hf_tok).__name__
        result.update(compare_tokenizers(hf_tok, pd_tokenizer, sample_texts(pd_tokenizer)))
        passed = passed and result["tokenizer_identical"]
    result["passed"] = bool(passed)
    return result
