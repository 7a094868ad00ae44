"""Hugging Face (PyTorch) -> PaddleNLP checkpoint conversion: the library.

Holds the per-architecture weight-mapping tables, the config translation, the
safe weight readers, the tokenizer rebuild, ``convert`` / ``verify_conversion``
and the trainer-facing helpers (``is_hf_checkpoint_dir``,
``ensure_paddle_checkpoint``, ``has_tokenizer``, ``no_tokenizer_message``).
``tools/convert_hf_to_paddle.py`` is the command-line front end; the trainers'
engine imports this module directly::

    from hf_to_paddle import ensure_paddle_checkpoint, is_hf_checkpoint_dir
    model_dir = ensure_paddle_checkpoint(args.model_name_or_path)

Imports: at module level only the standard library and numpy (safetensors when
reading weights); paddle, paddlenlp, torch and transformers are imported lazily
inside the functions that need them, so ``is_hf_checkpoint_dir`` and
``has_tokenizer`` stay cheap. Nothing here imports the project's other modules.

A converted directory holds ``model.safetensors`` (paddlenlp's
``from_pretrained`` reads it first), a PaddleNLP ``config.json`` (plus
``generation_config.json`` for generative models), the PaddleNLP tokenizer
files when the source had a tokenizer (or one was given with
``tokenizer_dir``), and ``hf_conversion.json`` (written last: its presence
means the conversion finished; its ``tokenizer_class`` is null when no
tokenizer was converted).

Supported architectures (config.json ``architectures[0]``, else ``model_type``):
BertModel, BertForSequenceClassification, BertForMaskedLM, RobertaModel,
RobertaForMaskedLM, RobertaForSequenceClassification, BartModel,
BartForConditionalGeneration, GPT2LMHeadModel (-> paddlenlp GPTForCausalLM).

The weight mapping is written out as per-architecture tables (``*_LAYER`` and
``_*_rules``): every HF key must be consumed by a rule or match a known-ignored
pattern, every Paddle parameter must be filled, and every shape must agree;
otherwise nothing is written and the error names the offending keys.

Safety: safetensors files are read with numpy only (no torch); ``.bin`` files go
through ``torch.load(weights_only=True)`` and need torch. Nothing else is
unpickled, and the output holds no pickles.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("hf_to_paddle")

# 2: weights in model.safetensors (was model_state.pdparams); tokenizer optional and fingerprinted.
CONVERTER_VERSION = 2
MARKER_FILE = "hf_conversion.json"

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

# Files that hold a tokenizer's vocabulary (HF or paddlenlp): a directory with none of
# them has no tokenizer. tokenizer_config.json alone is not enough to build one.
TOKENIZER_VOCAB_FILES = (
    "vocab.txt", "vocab.json", "tokenizer.json",
    "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "spm.model", "tokenizer.model",
)
TOKENIZER_SIDE_FILES = ("merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


class ConversionError(Exception):
    """The checkpoint cannot be converted faithfully; nothing was written."""


class VerificationError(ConversionError):
    """The converted model disagrees with the HF model beyond tolerance."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


# --------------------------------------------------------------------------
# Mapping tables.
# A rule is (paddle_name, hf_names, op). hf_names lists names under which HF
# stores the *same* tensor (tied weights: the first present one is used, any
# other present one must be identical, all of them count as consumed).
# op: COPY, TRANSPOSE (torch Linear [out, in] -> paddle Linear [in, out]) or
# QKV0/QKV1/QKV2 (slice of GPT-2's fused c_attn along the last axis).
# --------------------------------------------------------------------------
COPY = "copy"
TRANSPOSE = "transpose"
QKV = ("qkv:0", "qkv:1", "qkv:2")

Rule = Tuple[str, Tuple[str, ...], str]

# (paddle suffix, HF suffix, op) inside one BERT/RoBERTa encoder layer.
BERT_LAYER = [
    ("self_attn.q_proj.weight", "attention.self.query.weight", TRANSPOSE),
    ("self_attn.q_proj.bias", "attention.self.query.bias", COPY),
    ("self_attn.k_proj.weight", "attention.self.key.weight", TRANSPOSE),
    ("self_attn.k_proj.bias", "attention.self.key.bias", COPY),
    ("self_attn.v_proj.weight", "attention.self.value.weight", TRANSPOSE),
    ("self_attn.v_proj.bias", "attention.self.value.bias", COPY),
    ("self_attn.out_proj.weight", "attention.output.dense.weight", TRANSPOSE),
    ("self_attn.out_proj.bias", "attention.output.dense.bias", COPY),
    ("norm1.weight", "attention.output.LayerNorm.weight", COPY),
    ("norm1.bias", "attention.output.LayerNorm.bias", COPY),
    ("linear1.weight", "intermediate.dense.weight", TRANSPOSE),
    ("linear1.bias", "intermediate.dense.bias", COPY),
    ("linear2.weight", "output.dense.weight", TRANSPOSE),
    ("linear2.bias", "output.dense.bias", COPY),
    ("norm2.weight", "output.LayerNorm.weight", COPY),
    ("norm2.bias", "output.LayerNorm.bias", COPY),
]

BERT_EMBEDDINGS = [
    # word_embeddings is added separately: it may be tied to an LM decoder.
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight", COPY),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight", COPY),
    ("embeddings.layer_norm.weight", "embeddings.LayerNorm.weight", COPY),
    ("embeddings.layer_norm.bias", "embeddings.LayerNorm.bias", COPY),
]

BERT_POOLER = [
    ("pooler.dense.weight", "pooler.dense.weight", TRANSPOSE),
    ("pooler.dense.bias", "pooler.dense.bias", COPY),
]

_BART_ATTN = [
    ("q_proj.weight", "q_proj.weight", TRANSPOSE),
    ("q_proj.bias", "q_proj.bias", COPY),
    ("k_proj.weight", "k_proj.weight", TRANSPOSE),
    ("k_proj.bias", "k_proj.bias", COPY),
    ("v_proj.weight", "v_proj.weight", TRANSPOSE),
    ("v_proj.bias", "v_proj.bias", COPY),
    ("out_proj.weight", "out_proj.weight", TRANSPOSE),
    ("out_proj.bias", "out_proj.bias", COPY),
]
_BART_FFN = [
    ("linear1.weight", "fc1.weight", TRANSPOSE),
    ("linear1.bias", "fc1.bias", COPY),
    ("linear2.weight", "fc2.weight", TRANSPOSE),
    ("linear2.bias", "fc2.bias", COPY),
]

# paddle.nn.TransformerEncoderLayer (post-norm) vs HF BartEncoderLayer.
BART_ENCODER_LAYER = (
    [("self_attn." + p, "self_attn." + h, op) for p, h, op in _BART_ATTN]
    + [
        ("norm1.weight", "self_attn_layer_norm.weight", COPY),
        ("norm1.bias", "self_attn_layer_norm.bias", COPY),
    ]
    + _BART_FFN
    + [("norm2.weight", "final_layer_norm.weight", COPY), ("norm2.bias", "final_layer_norm.bias", COPY)]
)

# paddle.nn.TransformerDecoderLayer: norm1 self-attn, norm2 cross-attn, norm3 FFN.
BART_DECODER_LAYER = (
    [("self_attn." + p, "self_attn." + h, op) for p, h, op in _BART_ATTN]
    + [
        ("norm1.weight", "self_attn_layer_norm.weight", COPY),
        ("norm1.bias", "self_attn_layer_norm.bias", COPY),
    ]
    + [("cross_attn." + p, "encoder_attn." + h, op) for p, h, op in _BART_ATTN]
    + [
        ("norm2.weight", "encoder_attn_layer_norm.weight", COPY),
        ("norm2.bias", "encoder_attn_layer_norm.bias", COPY),
    ]
    + _BART_FFN
    + [("norm3.weight", "final_layer_norm.weight", COPY), ("norm3.bias", "final_layer_norm.bias", COPY)]
)

# GPT-2 uses Conv1D whose weight is already [in, out] like paddle Linear:
# nothing is transposed. c_attn fuses q|k|v along the output axis.
GPT2_LAYER = [
    ("norm1.weight", "ln_1.weight", COPY),
    ("norm1.bias", "ln_1.bias", COPY),
    ("self_attn.q_proj.weight", "attn.c_attn.weight", QKV[0]),
    ("self_attn.q_proj.bias", "attn.c_attn.bias", QKV[0]),
    ("self_attn.k_proj.weight", "attn.c_attn.weight", QKV[1]),
    ("self_attn.k_proj.bias", "attn.c_attn.bias", QKV[1]),
    ("self_attn.v_proj.weight", "attn.c_attn.weight", QKV[2]),
    ("self_attn.v_proj.bias", "attn.c_attn.bias", QKV[2]),
    ("self_attn.out_proj.weight", "attn.c_proj.weight", COPY),
    ("self_attn.out_proj.bias", "attn.c_proj.bias", COPY),
    ("norm2.weight", "ln_2.weight", COPY),
    ("norm2.bias", "ln_2.bias", COPY),
    ("linear1.weight", "mlp.c_fc.weight", COPY),
    ("linear1.bias", "mlp.c_fc.bias", COPY),
    ("linear2.weight", "mlp.c_proj.weight", COPY),
    ("linear2.bias", "mlp.c_proj.bias", COPY),
]

# HF keys that are known not to carry weights the Paddle model needs.
COMMON_IGNORED = [
    (r"(^|\.)embeddings\.position_ids$", "position_ids buffer, recomputed at runtime"),
    (r"(^|\.)embeddings\.token_type_ids$", "token_type_ids buffer, recomputed at runtime"),
]
GPT2_IGNORED = [(r"\.attn\.(masked_)?bias$", "causal-mask buffer, rebuilt by paddlenlp")]
BERT_MLM_IGNORED = [(r"^cls\.seq_relationship\.", "next-sentence head, unused by BertForMaskedLM (HF drops it too)")]
ROBERTA_HEAD_IGNORED = [(r"^roberta\.pooler\.", "pooler, absent from this head in HF and paddlenlp")]

# Old TF-ported checkpoints name LayerNorm parameters gamma/beta; HF renames them on load.
LEGACY_RENAMES = [(r"LayerNorm\.gamma$", "LayerNorm.weight"), (r"LayerNorm\.beta$", "LayerNorm.bias")]


def _expand(template, pd_prefix: str, hf_prefix: str) -> List[Rule]:
    return [(pd_prefix + p, (hf_prefix + h,), op) for p, h, op in template]


def _layers(template, n: int, pd_fmt: str, hf_fmt: str) -> List[Rule]:
    rules: List[Rule] = []
    for i in range(n):
        rules += _expand(template, pd_fmt.format(i), hf_fmt.format(i))
    return rules


def _bert_like_rules(family: str, arch: str, cfg: dict) -> Tuple[List[Rule], list, List[str]]:
    """BERT and RoBERTa share the encoder layout; they differ in prefix and heads."""
    base = "bert" if family == "bert" else "roberta"
    is_base_model = arch in ("BertModel", "RobertaModel")
    hf = pd = "" if is_base_model else base + "."
    word = hf + "embeddings.word_embeddings.weight"
    n = cfg["num_hidden_layers"]
    ignored = list(COMMON_IGNORED)
    placeholders: List[str] = []

    word_sources: Tuple[str, ...] = (word,)
    head: List[Rule] = []
    if arch == "BertForMaskedLM":
        # paddlenlp ties decoder.weight to the word embeddings; decoder_bias is decoder.bias.
        word_sources = (word, "cls.predictions.decoder.weight")
        bias_sources = ("cls.predictions.bias", "cls.predictions.decoder.bias")
        head = [
            ("cls.predictions.decoder.weight", word_sources, COPY),
            ("cls.predictions.decoder.bias", bias_sources, COPY),
            ("cls.predictions.decoder_bias", bias_sources, COPY),
            ("cls.predictions.transform.weight", ("cls.predictions.transform.dense.weight",), TRANSPOSE),
            ("cls.predictions.transform.bias", ("cls.predictions.transform.dense.bias",), COPY),
            ("cls.predictions.layer_norm.weight", ("cls.predictions.transform.LayerNorm.weight",), COPY),
            ("cls.predictions.layer_norm.bias", ("cls.predictions.transform.LayerNorm.bias",), COPY),
        ]
        ignored += BERT_MLM_IGNORED
        # HF BertForMaskedLM has no pooler but paddlenlp's does; its output is
        # not used by the MLM logits, so zeros are a faithful stand-in.
        placeholders = ["bert.pooler.dense.weight", "bert.pooler.dense.bias"]
    elif arch == "BertForSequenceClassification":
        head = [
            ("classifier.weight", ("classifier.weight",), TRANSPOSE),
            ("classifier.bias", ("classifier.bias",), COPY),
        ]
    elif arch == "RobertaForMaskedLM":
        word_sources = (word, "lm_head.decoder.weight")
        bias_sources = ("lm_head.bias", "lm_head.decoder.bias")
        head = [
            ("lm_head.decoder.weight", word_sources, COPY),
            ("lm_head.decoder.bias", bias_sources, COPY),
            ("lm_head.bias", bias_sources, COPY),
            ("lm_head.dense.weight", ("lm_head.dense.weight",), TRANSPOSE),
            ("lm_head.dense.bias", ("lm_head.dense.bias",), COPY),
            ("lm_head.layer_norm.weight", ("lm_head.layer_norm.weight",), COPY),
            ("lm_head.layer_norm.bias", ("lm_head.layer_norm.bias",), COPY),
        ]
        ignored += ROBERTA_HEAD_IGNORED
    elif arch == "RobertaForSequenceClassification":
        head = [
            ("classifier.dense.weight", ("classifier.dense.weight",), TRANSPOSE),
            ("classifier.dense.bias", ("classifier.dense.bias",), COPY),
            ("classifier.out_proj.weight", ("classifier.out_proj.weight",), TRANSPOSE),
            ("classifier.out_proj.bias", ("classifier.out_proj.bias",), COPY),
        ]
        ignored += ROBERTA_HEAD_IGNORED

    rules: List[Rule] = [(pd + "embeddings.word_embeddings.weight", word_sources, COPY)]
    rules += _expand(BERT_EMBEDDINGS, pd, hf)
    rules += _layers(BERT_LAYER, n, pd + "encoder.layers.{}.", hf + "encoder.layer.{}.")
    # paddlenlp builds a pooler for BertModel/BertFor*/RobertaModel, not for Roberta heads.
    if family == "bert" or is_base_model:
        rules += _expand(BERT_POOLER, pd, hf)
    return rules + head, ignored, placeholders


def _bart_rules(arch: str, cfg: dict) -> Tuple[List[Rule], list, List[str]]:
    cond_gen = arch == "BartForConditionalGeneration"
    hf, pd = ("model.", "bart.") if cond_gen else ("", "")
    tied = cfg.get("tie_word_embeddings", True)
    # paddlenlp always shares one embedding between encoder and decoder.
    shared = (hf + "shared.weight", hf + "encoder.embed_tokens.weight", hf + "decoder.embed_tokens.weight")
    rules: List[Rule] = [
        (pd + "shared.weight", shared, COPY),
        (pd + "encoder.embed_tokens.weight", shared, COPY),
        (pd + "decoder.embed_tokens.weight", shared, COPY),
        # Both sides store max_position_embeddings + 2 rows and add the +2 offset at lookup.
        (pd + "encoder.encoder_embed_positions.weight", (hf + "encoder.embed_positions.weight",), COPY),
        (pd + "decoder.decoder_embed_positions.weight", (hf + "decoder.embed_positions.weight",), COPY),
        (pd + "encoder.encoder_layernorm_embedding.weight", (hf + "encoder.layernorm_embedding.weight",), COPY),
        (pd + "encoder.encoder_layernorm_embedding.bias", (hf + "encoder.layernorm_embedding.bias",), COPY),
        (pd + "decoder.decoder_layernorm_embedding.weight", (hf + "decoder.layernorm_embedding.weight",), COPY),
        (pd + "decoder.decoder_layernorm_embedding.bias", (hf + "decoder.layernorm_embedding.bias",), COPY),
    ]
    rules += _layers(
        BART_ENCODER_LAYER, cfg["encoder_layers"], pd + "encoder.encoder.layers.{}.", hf + "encoder.layers.{}."
    )
    rules += _layers(
        BART_DECODER_LAYER, cfg["decoder_layers"], pd + "decoder.decoder.layers.{}.", hf + "decoder.layers.{}."
    )
    if cond_gen:
        # paddlenlp keeps a separate lm_head_weight ([vocab, d_model], used with
        # transpose_y), so an untied HF head is representable too.
        lm_sources = ("lm_head.weight",) + (shared if tied else ())
        rules += [
            ("lm_head_weight", lm_sources, COPY),
            ("final_logits_bias", ("final_logits_bias",), COPY),
        ]
    return rules, list(COMMON_IGNORED), []


def _gpt2_rules(arch: str, cfg: dict) -> Tuple[List[Rule], list, List[str]]:
    hf, pd = "transformer.", "gpt."
    # GPTForCausalLM's lm_head *is* the word embedding (tied); an untied HF
    # lm_head.weight is caught by the tie equality check.
    word = (hf + "wte.weight", "lm_head.weight")
    rules: List[Rule] = [
        (pd + "embeddings.word_embeddings.weight", word, COPY),
        ("lm_head.weight", word, COPY),
        (pd + "embeddings.position_embeddings.weight", (hf + "wpe.weight",), COPY),
        (pd + "decoder.norm.weight", (hf + "ln_f.weight",), COPY),
        (pd + "decoder.norm.bias", (hf + "ln_f.bias",), COPY),
    ]
    rules += _layers(GPT2_LAYER, cfg["n_layer"], pd + "decoder.layers.{}.", hf + "h.{}.")
    return rules, COMMON_IGNORED + GPT2_IGNORED, []


# --------------------------------------------------------------------------
# Config translation: HF config.json dict -> paddlenlp config kwargs.
# Anything paddlenlp cannot represent raises instead of converting silently wrong.
# --------------------------------------------------------------------------
# paddle.nn.Transformer*Layer resolves the activation with getattr(F, name);
# these HF names mean the same function there (HF "gelu" is the exact erf form,
# like paddle's F.gelu default).
ENCODER_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
# paddlenlp GPT always calls gelu(approximate=True), i.e. the tanh form.
GPT_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
PADDLE_DEFAULT_LN_EPS = 1e-5

GENERIC_KEYS = (
    "id2label",
    "label2id",
    "problem_type",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "classifier_dropout",
)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(message)


def _generic(cfg: dict) -> dict:
    out = {k: cfg[k] for k in GENERIC_KEYS if k in cfg}
    if "id2label" in out:
        out["id2label"] = {int(k): v for k, v in out["id2label"].items()}
    return out


def _encoder_activation(name: str, field: str) -> str:
    _require(
        name in ENCODER_ACTIVATIONS,
        f"config.json {field}={name!r} has no paddlenlp equivalent "
        f"(supported: {sorted(ENCODER_ACTIVATIONS)}); refusing to convert.",
    )
    return ENCODER_ACTIVATIONS[name]


def _bert_like_config(cfg: dict, family: str) -> dict:
    pet = cfg.get("position_embedding_type", "absolute")
    _require(pet == "absolute", f"position_embedding_type={pet!r}: paddlenlp {family} only has absolute positions.")
    _require(not cfg.get("is_decoder", False), f"is_decoder=True {family} models are not supported.")
    _require(not cfg.get("add_cross_attention", False), f"add_cross_attention=True {family} is not supported.")
    out = _generic(cfg)
    out.update(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        num_hidden_layers=cfg["num_hidden_layers"],
        num_attention_heads=cfg["num_attention_heads"],
        intermediate_size=cfg["intermediate_size"],
        hidden_act=_encoder_activation(cfg.get("hidden_act", "gelu"), "hidden_act"),
        hidden_dropout_prob=cfg.get("hidden_dropout_prob", 0.1),
        attention_probs_dropout_prob=cfg.get("attention_probs_dropout_prob", 0.1),
        max_position_embeddings=cfg.get("max_position_embeddings", 512),
        type_vocab_size=cfg.get("type_vocab_size", 2),
        initializer_range=cfg.get("initializer_range", 0.02),
        layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
        pad_token_id=cfg.get("pad_token_id", 0 if family == "bert" else 1),
    )
    if family == "roberta":
        out["cls_token_id"] = cfg.get("bos_token_id", 0)
    return out


def _bart_config(cfg: dict) -> dict:
    for key in ("normalize_before", "add_final_layer_norm", "static_position_embeddings"):
        _require(not cfg.get(key, False), f"BART config {key}=True (mBART-style) has no paddlenlp BART equivalent.")
    _require(cfg.get("normalize_embedding", True), "BART config normalize_embedding=False is not supported.")
    _require(cfg.get("extra_pos_embeddings", 2) == 2, "BART position offset other than 2 is not supported.")
    out = _generic(cfg)
    out.update(
        vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg["max_position_embeddings"],
        encoder_layers=cfg["encoder_layers"],
        encoder_ffn_dim=cfg["encoder_ffn_dim"],
        encoder_attention_heads=cfg["encoder_attention_heads"],
        decoder_layers=cfg["decoder_layers"],
        decoder_ffn_dim=cfg["decoder_ffn_dim"],
        decoder_attention_heads=cfg["decoder_attention_heads"],
        activation_function=_encoder_activation(cfg.get("activation_function", "gelu"), "activation_function"),
        d_model=cfg["d_model"],
        dropout=cfg.get("dropout", 0.1),
        attention_dropout=cfg.get("attention_dropout", 0.0),
        activation_dropout=cfg.get("activation_dropout", 0.0),
        init_std=cfg.get("init_std", 0.02),
        scale_embedding=cfg.get("scale_embedding", False),
        pad_token_id=cfg.get("pad_token_id", 1),
        bos_token_id=cfg.get("bos_token_id", 0),
        eos_token_id=cfg.get("eos_token_id", 2),
        decoder_start_token_id=cfg.get("decoder_start_token_id", 2),
    )
    return out


def _gpt2_config(cfg: dict) -> dict:
    act = cfg.get("activation_function", "gelu_new")
    _require(
        act in GPT_TANH_GELUS,
        f"GPT-2 activation_function={act!r}: paddlenlp GPT only implements the tanh-approximate GELU "
        f"({', '.join(GPT_TANH_GELUS)}).",
    )
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    _require(
        abs(eps - PADDLE_DEFAULT_LN_EPS) <= 1e-12,
        f"GPT-2 layer_norm_epsilon={eps}: paddlenlp GPT hard-codes LayerNorm epsilon=1e-5.",
    )
    _require(cfg.get("scale_attn_weights", True), "GPT-2 scale_attn_weights=False is not supported by paddlenlp GPT.")
    _require(
        not cfg.get("scale_attn_by_inverse_layer_idx", False),
        "GPT-2 scale_attn_by_inverse_layer_idx=True is not supported by paddlenlp GPT.",
    )
    _require(not cfg.get("add_cross_attention", False), "GPT-2 add_cross_attention=True is not supported.")
    _require(
        cfg.get("tie_word_embeddings", True),
        "GPT-2 tie_word_embeddings=False: paddlenlp GPTForCausalLM always ties lm_head to the word embeddings.",
    )
    out = _generic(cfg)
    eos = cfg.get("eos_token_id", 50256)
    out.update(
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["n_embd"],
        num_hidden_layers=cfg["n_layer"],
        num_attention_heads=cfg["n_head"],
        intermediate_size=cfg.get("n_inner") or 4 * cfg["n_embd"],
        hidden_activation="gelu",  # paddlenlp GPT's "gelu" is the tanh approximation (== HF gelu_new)
        hidden_dropout_prob=cfg.get("resid_pdrop", 0.1),
        attention_probs_dropout_prob=cfg.get("attn_pdrop", 0.1),
        max_position_embeddings=cfg["n_positions"],
        seq_length=cfg.get("n_ctx", cfg["n_positions"]),
        initializer_range=cfg.get("initializer_range", 0.02),
        layer_norm_eps=eps,
        bos_token_id=cfg.get("bos_token_id", eos),
        eos_token_id=eos,
        # GPT-2 has no pad token; paddlenlp's default (0) is a real token, so pad with eos.
        pad_token_id=cfg["pad_token_id"] if cfg.get("pad_token_id") is not None else eos,
    )
    return out


# HF architecture -> model family (selects the table and config translation) and paddlenlp class.
ARCHITECTURES: Dict[str, dict] = {
    "BertModel": dict(family="bert", paddle_class="BertModel"),
    "BertForSequenceClassification": dict(family="bert", paddle_class="BertForSequenceClassification"),
    "BertForMaskedLM": dict(family="bert", paddle_class="BertForMaskedLM"),
    "RobertaModel": dict(family="roberta", paddle_class="RobertaModel"),
    "RobertaForMaskedLM": dict(family="roberta", paddle_class="RobertaForMaskedLM"),
    "RobertaForSequenceClassification": dict(family="roberta", paddle_class="RobertaForSequenceClassification"),
    "BartModel": dict(family="bart", paddle_class="BartModel"),
    "BartForConditionalGeneration": dict(family="bart", paddle_class="BartForConditionalGeneration"),
    "GPT2LMHeadModel": dict(family="gpt2", paddle_class="GPTForCausalLM"),
}
MODEL_TYPE_DEFAULTS = {"bert": "BertModel", "roberta": "RobertaModel", "bart": "BartModel", "gpt2": "GPT2LMHeadModel"}
GENERATIVE = ("BartForConditionalGeneration", "GPT2LMHeadModel")


def build_rules(arch: str, cfg: dict):
    family = ARCHITECTURES[arch]["family"]
    if family in ("bert", "roberta"):
        return _bert_like_rules(family, arch, cfg)
    if family == "bart":
        return _bart_rules(arch, cfg)
    return _gpt2_rules(arch, cfg)


def build_paddle_config_kwargs(arch: str, cfg: dict) -> dict:
    family = ARCHITECTURES[arch]["family"]
    if family in ("bert", "roberta"):
        out = _bert_like_config(cfg, family)
    elif family == "bart":
        out = _bart_config(cfg)
    else:
        out = _gpt2_config(cfg)
    out["architectures"] = [ARCHITECTURES[arch]["paddle_class"]]
    return out


def expected_layer_norm_eps(arch: str, cfg: dict) -> float:
    family = ARCHITECTURES[arch]["family"]
    if family in ("bert", "roberta"):
        return float(cfg.get("layer_norm_eps", 1e-12))
    # HF BART uses nn.LayerNorm's default; GPT-2's was checked to equal it.
    return PADDLE_DEFAULT_LN_EPS


def select_architecture(cfg: dict, config_path: str = "config.json") -> str:
    archs = cfg.get("architectures") or []
    supported = ", ".join(sorted(ARCHITECTURES))
    if archs:
        arch = archs[0]
        _require(arch in ARCHITECTURES, f"{config_path}: unsupported architecture {arch!r}. Supported: {supported}.")
        return arch
    model_type = cfg.get("model_type")
    _require(
        model_type in MODEL_TYPE_DEFAULTS,
        f"{config_path}: no 'architectures' and unsupported model_type {model_type!r}. Supported architectures: "
        f"{supported}.",
    )
    return MODEL_TYPE_DEFAULTS[model_type]


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


# --------------------------------------------------------------------------
# Tokenizer.
# --------------------------------------------------------------------------
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}


def _token_str(value) -> Optional[str]:
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer_files(src_dir: str, workdir: str) -> Tuple[str, Dict[str, str]]:
    """Return (kind, files) with kind 'wordpiece' or 'bpe'; may extract them from tokenizer.json."""
    vocab_txt = os.path.join(src_dir, "vocab.txt")
    vocab_json, merges = os.path.join(src_dir, "vocab.json"), os.path.join(src_dir, "merges.txt")
    if os.path.isfile(vocab_txt):
        return "wordpiece", {"vocab_file": vocab_txt}
    if os.path.isfile(vocab_json) and os.path.isfile(merges):
        return "bpe", {"vocab_file": vocab_json, "merges_file": merges}
    fast = _read_json(os.path.join(src_dir, "tokenizer.json")).get("model") or {}
    if fast.get("type") == "WordPiece":
        path = os.path.join(workdir, "vocab.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(tok + "\n" for tok, _ in sorted(fast["vocab"].items(), key=lambda kv: kv[1]))
        return "wordpiece", {"vocab_file": path}
    if fast.get("type") == "BPE":
        vpath, mpath = os.path.join(workdir, "vocab.json"), os.path.join(workdir, "merges.txt")
        with open(vpath, "w", encoding="utf-8") as f:
            json.dump(fast["vocab"], f, ensure_ascii=False)
        with open(mpath, "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            f.writelines((m if isinstance(m, str) else " ".join(m)) + "\n" for m in fast["merges"])
        return "bpe", {"vocab_file": vpath, "merges_file": mpath}
    present = [n for n in TOKENIZER_VOCAB_FILES + TOKENIZER_SIDE_FILES if os.path.isfile(os.path.join(src_dir, n))]
    raise ConversionError(
        f"{src_dir}: no tokenizer this converter can rebuild (found {', '.join(present) or 'no tokenizer files'}; "
        f"need vocab.txt, or vocab.json + merges.txt, or a WordPiece/BPE tokenizer.json). "
        f"Take one from another HF tokenizer dir with --tokenizer DIR (tokenizer_dir=DIR)."
    )


def has_tokenizer(model_dir: str) -> bool:
    """Whether a local model dir (HF, or paddlenlp / converted) holds tokenizer vocabulary files.

    False for a converted dir whose source had no tokenizer (its marker's
    tokenizer_class is then null) and for anything that is not a directory.
    Cheap: looks at file names only.
    """
    return bool(model_dir) and any(os.path.isfile(os.path.join(model_dir, n)) for n in TOKENIZER_VOCAB_FILES)


# (model family, vocabulary kind) -> paddlenlp tokenizer class.
PADDLE_TOKENIZER_CLASSES = {
    ("bert", "wordpiece"): "BertTokenizer",
    ("roberta", "wordpiece"): "RobertaChineseTokenizer",
    ("roberta", "bpe"): "RobertaBPETokenizer",
    # e.g. fnlp/bart-base-chinese ships a BERT vocab.txt with a BART model.
    ("bart", "wordpiece"): "BertTokenizer",
    ("bart", "bpe"): "BartTokenizer",
    ("gpt2", "bpe"): "GPTTokenizer",
}
VOCABULARY_FILES = {"wordpiece": "vocab.txt (WordPiece)", "bpe": "vocab.json + merges.txt (BPE)"}


def _paddle_tokenizer_class(family: str, kind: str) -> str:
    table = PADDLE_TOKENIZER_CLASSES
    _require((family, kind) in table, f"no paddlenlp tokenizer for a {family} model with a {kind} vocabulary.")
    return table[(family, kind)]


def _added_tokens(src_dir: str) -> List[Tuple[int, str, bool]]:
    """Tokens HF added on top of the base vocabulary, as (id, content, special)."""
    found = {}
    for tok in _read_json(os.path.join(src_dir, "tokenizer.json")).get("added_tokens", []) or []:
        found[int(tok["id"])] = (tok["content"], bool(tok.get("special")))
    decoder = _read_json(os.path.join(src_dir, "tokenizer_config.json")).get("added_tokens_decoder") or {}
    for tid, tok in decoder.items():
        found.setdefault(int(tid), (tok["content"], bool(tok.get("special"))))
    for content, tid in _read_json(os.path.join(src_dir, "added_tokens.json")).items():
        found.setdefault(int(tid), (content, True))
    return sorted((tid, c, s) for tid, (c, s) in found.items())


def build_paddle_tokenizer(src_dir: str, family: str, workdir: str):
    import inspect

    import paddlenlp.transformers as pnt

    kind, files = _tokenizer_files(src_dir, workdir)
    cls_name = _paddle_tokenizer_class(family, kind)
    cls = getattr(pnt, cls_name)
    hf_tok_cfg = _read_json(os.path.join(src_dir, "tokenizer_config.json"))
    merged = dict(hf_tok_cfg)
    merged.update(_read_json(os.path.join(src_dir, "special_tokens_map.json")))
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = dict(files)
    for key in SPECIAL_TOKEN_KEYS:
        token = _token_str(merged.get(key))
        if token is not None and key in accepted:
            kwargs[key] = token
    for key in ("do_lower_case", "tokenize_chinese_chars", "strip_accents", "add_prefix_space"):
        if key in hf_tok_cfg and key in accepted and hf_tok_cfg[key] is not None:
            kwargs[key] = hf_tok_cfg[key]
    max_len = hf_tok_cfg.get("model_max_length")
    if isinstance(max_len, (int, float)) and 0 < max_len <= 1_000_000:
        kwargs["model_max_length"] = int(max_len)
    tokenizer = cls(**kwargs)

    base_size = len(tokenizer.get_vocab()) if hasattr(tokenizer, "get_vocab") else tokenizer.vocab_size
    for tid, content, special in _added_tokens(src_dir):
        if tokenizer.convert_tokens_to_ids(content) == tid:
            continue
        _require(tid >= base_size, f"{src_dir}: tokenizer token {content!r} has id {tid} in HF but "
                                   f"{tokenizer.convert_tokens_to_ids(content)} in paddlenlp's {cls_name}.")
        tokenizer.add_tokens([content], special_tokens=special)
        got = tokenizer.convert_tokens_to_ids(content)
        _require(got == tid, f"{src_dir}: added token {content!r} got id {got} in paddlenlp, HF has {tid}.")
    return tokenizer, cls_name


def _check_tokenizer_fits(tokenizer, tokenizer_dir: str, hf_cfg: dict, config_path: str) -> None:
    """A tokenizer taken from elsewhere must not produce ids the model has no embedding for."""
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    n_ids = max(vocab.values()) + 1 if vocab else len(tokenizer)
    model_vocab = hf_cfg.get("vocab_size")
    _require(
        not isinstance(model_vocab, int) or n_ids <= model_vocab,
        f"{tokenizer_dir}: the tokenizer has ids up to {n_ids - 1} but {config_path} has vocab_size={model_vocab}; "
        f"it is not this model's tokenizer.",
    )


# --------------------------------------------------------------------------
# Conversion.
# --------------------------------------------------------------------------
def _check_layer_norm_eps(model, expected: float, what: str) -> None:
    import paddle

    wrong = [
        f"{name} ({layer._epsilon})"
        for name, layer in model.named_sublayers()
        if isinstance(layer, paddle.nn.LayerNorm) and abs(layer._epsilon - expected) > expected * 1e-6
    ]
    _require(not wrong, f"{what}: paddlenlp LayerNorm epsilon differs from HF ({expected}): {', '.join(wrong)}")


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
    if tokenizer_dir is not None:
        tokenizer_dir = os.path.abspath(tokenizer_dir)
        _require(os.path.isdir(tokenizer_dir), f"{tokenizer_dir}: tokenizer dir not found.")
        _require(has_tokenizer(tokenizer_dir), f"{tokenizer_dir}: no tokenizer files "
                                               f"(looked for {', '.join(TOKENIZER_VOCAB_FILES)}).")
    config_path = os.path.join(src_dir, "config.json")
    _require(os.path.isdir(src_dir), f"{src_dir}: not a directory.")
    _require(os.path.isfile(config_path), f"{config_path}: missing (an HF checkpoint needs config.json).")
    _require(src_dir != dst_dir, "SRC_DIR and DST_DIR must differ.")
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
        report["verify"] = verify_conversion(src_dir, dst_dir, arch, hf_cfg, tolerance, tokenizer_dir=tokenizer_source)
        report["verify_seconds"] = round(time.time() - verify_started, 3)
        if not report["verify"]["passed"]:
            raise VerificationError(_verify_failure_message(report["verify"], tolerance), report)

    report["converter_version"] = CONVERTER_VERSION
    report["source_fingerprint"] = _fingerprint(src_dir)
    # Written last: its presence means every other file is complete.
    with open(os.path.join(dst_dir, MARKER_FILE), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    return report


def _verify_failure_message(v: dict, tolerance: float) -> str:
    parts = []
    if v["max_abs_diff"] > tolerance:
        parts.append(f"max abs diff {v['max_abs_diff']:.3g} > tolerance {tolerance:g}")
    if v.get("greedy_identical") is False:
        parts.append(f"greedy generations differ: HF {v['greedy_hf']} vs Paddle {v['greedy_paddle']}")
    if v.get("tokenizer_identical") is False:
        parts.append(f"tokenizers disagree: HF {v['tokenizer_hf']} vs Paddle {v['tokenizer_paddle']}")
    return "Verification failed: " + "; ".join(parts)


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
    src_dir: str, dst_dir: str, arch: str, hf_cfg: dict, tolerance: float = 1e-4, tokenizer_dir: Optional[str] = None
) -> dict:
    """Run the HF model from src_dir and the Paddle one from dst_dir on the same random padded ids.

    The tokenizers are compared too (HF from tokenizer_dir, default src_dir)
    unless dst_dir holds no tokenizer, in which case only that comparison is
    skipped and result["tokenizer_check"] says so.
    """
    try:
        import torch
        import transformers
    except ImportError as e:
        raise ConversionError(f"--verify needs torch and transformers to run the HF model: {e}") from None
    import paddlenlp.transformers as pnt

    spec = ARCHITECTURES[arch]
    family = spec["family"]
    torch.manual_seed(0)
    hf_cls = getattr(transformers, arch)
    try:
        # eager = the reference attention math, no fused-kernel rounding differences
        hf_model = hf_cls.from_pretrained(src_dir, local_files_only=True, attn_implementation="eager")
    except TypeError:  # transformers too old to know attn_implementation
        hf_model = hf_cls.from_pretrained(src_dir, local_files_only=True)
    hf_model.eval()  # dropout off
    reload_mismatches = _align_hf_model_with_checkpoint(hf_model, src_dir)
    pd_model = getattr(pnt, spec["paddle_class"]).from_pretrained(dst_dir)
    pd_model.eval()
    _check_layer_norm_eps(pd_model, expected_layer_norm_eps(arch, hf_cfg), f"{dst_dir} (reloaded)")

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
        "hf_reload_mismatches": reload_mismatches,
    }
    passed = result["max_abs_diff"] <= tolerance

    if arch in GENERATIVE:
        result["greedy_hf"] = _greedy(lambda x: _hf_forward(hf_model, arch, x)["logits"], inputs, family, hf_cfg)
        result["greedy_paddle"] = _greedy(
            lambda x: _paddle_forward(pd_model, arch, x)["logits"], inputs, family, hf_cfg
        )
        result["greedy_identical"] = result["greedy_hf"] == result["greedy_paddle"]
        passed = passed and result["greedy_identical"]

    if not has_tokenizer(dst_dir):
        result["tokenizer_check"] = "skipped: no tokenizer was converted (model outputs compared on random ids)"
        result["passed"] = bool(passed)
        return result
    try:
        hf_tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir or src_dir, local_files_only=True)
    except Exception as e:  # the HF side may lack a loadable tokenizer; the paddle one was built anyway
        result["tokenizer_check"] = f"skipped: HF tokenizer did not load ({e})"
    else:
        pd_tok = pnt.AutoTokenizer.from_pretrained(dst_dir)
        result["tokenizer_hf"] = hf_tok(VERIFY_TEXT)["input_ids"]
        result["tokenizer_paddle"] = pd_tok(VERIFY_TEXT)["input_ids"]
        result["tokenizer_identical"] = result["tokenizer_hf"] == result["tokenizer_paddle"]
        passed = passed and result["tokenizer_identical"]
    result["passed"] = bool(passed)
    return result


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
