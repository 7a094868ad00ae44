"""The architectures the converter maps, in both directions: per-architecture weight-mapping tables (a rule is a
Paddle name, the HF names of the same tensor and an op), read HF -> Paddle by to_paddle.py and Paddle -> HF by
to_hf.py, and the translation of configs (one field table, read both ways). Anything the other side cannot
represent raises instead of converting silently wrong.

Imports: the standard library; of the project `errors`.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from paddle_finetune.errors import ConversionError


# --------------------------------------------------------------------------
# A rule is (paddle_name, hf_names, op). hf_names lists names under which HF
# stores the *same* tensor (tied weights). HF -> Paddle: the first present one
# is used, any other present one must be identical, all of them count as
# consumed. Paddle -> HF: each rule writes its first HF name (the one HF's own
# save_pretrained keeps); the others are aliases transformers ties back on load.
# op: COPY, TRANSPOSE (torch Linear [out, in] <-> paddle Linear [in, out]) or
# QKV0/QKV1/QKV2 (slice of GPT-2's fused c_attn along the last axis; Paddle ->
# HF concatenates the three slices again). Every op is its own exact inverse.
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
            # Written back under both names: transformers 4.46 loses lm_head.bias (re-ties it to a fresh
            # decoder.bias) when a file holds only lm_head.bias, as its own save_pretrained writes it.
            ("lm_head.decoder.bias", bias_sources[::-1], COPY),
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

    def own_name_first(name):
        # Untied, transformers ties the encoder's and decoder's embed_tokens to nothing on load (and reports
        # them as neither loaded nor missing): Paddle -> HF must write each under its own name then.
        return shared if tied else (name,) + tuple(n for n in shared if n != name)

    rules: List[Rule] = [
        (pd + "shared.weight", shared, COPY),
        (pd + "encoder.embed_tokens.weight", own_name_first(hf + "encoder.embed_tokens.weight"), COPY),
        (pd + "decoder.embed_tokens.weight", own_name_first(hf + "decoder.embed_tokens.weight"), COPY),
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
        # transpose_y), so an untied HF head is representable too. Tied, it is
        # written back as the shared embedding alone, as HF saves it.
        lm_sources = shared + ("lm_head.weight",) if tied else ("lm_head.weight",)
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
# Config translation, both ways. Per family, FIELDS lists the plain renames
# (HF field, paddlenlp field, default when HF omits it; REQUIRED: no default).
# HF -> Paddle reads it left to right (build_paddle_config_kwargs), Paddle -> HF
# right to left (build_hf_config); what is not a plain rename (activations,
# GPT-2's n_inner and pad, RoBERTa's cls id) is spelled out in both directions
# next to each other, and build_hf_config checks that translating its result
# forward gives back the Paddle config, so the two can never drift apart.
# --------------------------------------------------------------------------
REQUIRED = object()

# Anything paddlenlp cannot represent raises instead of converting silently wrong.
# these HF names mean the same function there (HF "gelu" is the exact erf form,
# like paddle's F.gelu default). The first HF name of a function is the one written back.
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

_BERT_LIKE_FIELDS = [
    ("vocab_size", "vocab_size", REQUIRED),
    ("hidden_size", "hidden_size", REQUIRED),
    ("num_hidden_layers", "num_hidden_layers", REQUIRED),
    ("num_attention_heads", "num_attention_heads", REQUIRED),
    ("intermediate_size", "intermediate_size", REQUIRED),
    ("hidden_dropout_prob", "hidden_dropout_prob", 0.1),
    ("attention_probs_dropout_prob", "attention_probs_dropout_prob", 0.1),
    ("max_position_embeddings", "max_position_embeddings", 512),
    ("type_vocab_size", "type_vocab_size", 2),
    ("initializer_range", "initializer_range", 0.02),
    ("layer_norm_eps", "layer_norm_eps", 1e-12),
]
FIELDS = {
    "bert": _BERT_LIKE_FIELDS + [("pad_token_id", "pad_token_id", 0)],
    "roberta": _BERT_LIKE_FIELDS + [("pad_token_id", "pad_token_id", 1), ("bos_token_id", "cls_token_id", 0)],
    "bart": [
        ("vocab_size", "vocab_size", REQUIRED),
        ("max_position_embeddings", "max_position_embeddings", REQUIRED),
        ("encoder_layers", "encoder_layers", REQUIRED),
        ("encoder_ffn_dim", "encoder_ffn_dim", REQUIRED),
        ("encoder_attention_heads", "encoder_attention_heads", REQUIRED),
        ("decoder_layers", "decoder_layers", REQUIRED),
        ("decoder_ffn_dim", "decoder_ffn_dim", REQUIRED),
        ("decoder_attention_heads", "decoder_attention_heads", REQUIRED),
        ("d_model", "d_model", REQUIRED),
        ("dropout", "dropout", 0.1),
        ("attention_dropout", "attention_dropout", 0.0),
        ("activation_dropout", "activation_dropout", 0.0),
        ("init_std", "init_std", 0.02),
        ("scale_embedding", "scale_embedding", False),
        ("pad_token_id", "pad_token_id", 1),
        ("bos_token_id", "bos_token_id", 0),
        ("eos_token_id", "eos_token_id", 2),
        ("decoder_start_token_id", "decoder_start_token_id", 2),
    ],
    "gpt2": [
        ("vocab_size", "vocab_size", REQUIRED),
        ("n_embd", "hidden_size", REQUIRED),
        ("n_layer", "num_hidden_layers", REQUIRED),
        ("n_head", "num_attention_heads", REQUIRED),
        ("resid_pdrop", "hidden_dropout_prob", 0.1),
        ("attn_pdrop", "attention_probs_dropout_prob", 0.1),
        ("n_positions", "max_position_embeddings", REQUIRED),
        ("initializer_range", "initializer_range", 0.02),
        ("layer_norm_epsilon", "layer_norm_eps", 1e-5),
        ("eos_token_id", "eos_token_id", 50256),
    ],
}
MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "bart": "bart", "gpt2": "gpt2"}


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConversionError(message)


def _generic(cfg: dict) -> dict:
    out = {k: cfg[k] for k in GENERIC_KEYS if k in cfg}
    if "id2label" in out:
        out["id2label"] = {int(k): v for k, v in out["id2label"].items()}
    return out


def _renamed(cfg: dict, family: str) -> dict:
    out = {}
    for hf, pd, default in FIELDS[family]:
        out[pd] = cfg[hf] if default is REQUIRED else cfg.get(hf, default)
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
    out.update(_renamed(cfg, family))
    out["hidden_act"] = _encoder_activation(cfg.get("hidden_act", "gelu"), "hidden_act")
    return out


def _bart_config(cfg: dict) -> dict:
    for key in ("normalize_before", "add_final_layer_norm", "static_position_embeddings"):
        _require(not cfg.get(key, False), f"BART config {key}=True (mBART-style) has no paddlenlp BART equivalent.")
    _require(cfg.get("normalize_embedding", True), "BART config normalize_embedding=False is not supported.")
    _require(cfg.get("extra_pos_embeddings", 2) == 2, "BART position offset other than 2 is not supported.")
    out = _generic(cfg)
    out.update(_renamed(cfg, "bart"))
    out["activation_function"] = _encoder_activation(cfg.get("activation_function", "gelu"), "activation_function")
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
    out.update(_renamed(cfg, "gpt2"))
    eos = out["eos_token_id"]
    out.update(
        intermediate_size=cfg.get("n_inner") or 4 * cfg["n_embd"],
        hidden_activation="gelu",  # paddlenlp GPT's "gelu" is the tanh approximation (== HF gelu_new)
        seq_length=cfg.get("n_ctx", cfg["n_positions"]),
        bos_token_id=cfg.get("bos_token_id", eos),
        # GPT-2 has no pad token; paddlenlp's default (0) is a real token, so pad with eos.
        pad_token_id=cfg["pad_token_id"] if cfg.get("pad_token_id") is not None else eos,
    )
    return out


def _hf_fields_from_paddle(family: str, pd) -> dict:
    """FIELDS and the special cases above, read from Paddle to HF (pd: a paddlenlp config)."""
    out = {hf: getattr(pd, name) for hf, name, _ in FIELDS[family]}
    if family in ("bert", "roberta"):
        act = getattr(pd, "hidden_act", "gelu")
        out["hidden_act"] = next((h for h, p in ENCODER_ACTIVATIONS.items() if p == act), act)
    elif family == "bart":
        act = getattr(pd, "activation_function", "gelu")
        out["activation_function"] = next((h for h, p in ENCODER_ACTIVATIONS.items() if p == act), act)
        # HF's BartConfig defaults forced_eos_token_id to 2; paddlenlp's BART forces nothing unless told.
        out["forced_bos_token_id"] = getattr(pd, "forced_bos_token_id", None)
        out["forced_eos_token_id"] = getattr(pd, "forced_eos_token_id", None)
    else:
        # Written as HF writes them where the forward defaults give the same values back: n_inner None is
        # 4 * n_embd, n_ctx defaults to n_positions, and a pad equal to eos is HF GPT-2's "no pad token".
        out.update(activation_function=GPT_TANH_GELUS[0], bos_token_id=pd.bos_token_id, embd_pdrop=pd.hidden_dropout_prob,
                   n_inner=None if pd.intermediate_size == 4 * pd.hidden_size else pd.intermediate_size,
                   pad_token_id=None if pd.pad_token_id == pd.eos_token_id else pd.pad_token_id)
        if pd.seq_length != pd.max_position_embeddings:
            out["n_ctx"] = pd.seq_length
    return out


# paddlenlp config fields outside the forward translation that change what the model computes: HF has one value.
PADDLE_ONLY_REQUIREMENTS = {
    "bert": {"pool_act": "tanh"},
    "gpt2": {"normalize_before": True, "scale_qk_coeff": 1.0},
}


def build_hf_config(arch: str, pd, id2label: Optional[dict] = None) -> dict:
    """The HF config.json of a paddlenlp model (pd: its config), refused by name where HF cannot say the same.

    Translated back with build_paddle_config_kwargs, the result must give every field of pd again.
    """
    family = ARCHITECTURES[arch]["family"]
    hf = {"model_type": MODEL_TYPES[family], "architectures": [arch]}
    hf.update(_hf_fields_from_paddle(family, pd))
    for key in ("problem_type", "classifier_dropout"):
        if getattr(pd, key, None) is not None:
            hf[key] = getattr(pd, key)
    if arch.endswith("ForSequenceClassification"):
        labels = id2label if id2label is not None else getattr(pd, "id2label", None) or {}
        hf["id2label"] = {str(int(k)): v for k, v in sorted(labels.items(), key=lambda kv: int(kv[0]))}
        hf["label2id"] = {v: int(k) for k, v in hf["id2label"].items()}
    wrong = [f"{key}={getattr(pd, key, None)!r} (HF needs {value!r})"
             for key, value in PADDLE_ONLY_REQUIREMENTS.get(family, {}).items() if getattr(pd, key, value) != value]
    back = build_paddle_config_kwargs(arch, hf)
    for key in ("architectures", "id2label", "label2id"):  # the label names were written from the run's label map
        back.pop(key, None)
    for key, value in back.items():
        have = getattr(pd, key, None)
        if have is None and key in GENERIC_KEYS:
            continue  # an id the Paddle config leaves unset (e.g. a RoBERTa's bos, HF's name for its cls id)
        same = abs(value - have) <= 1e-12 * max(1.0, abs(value)) if isinstance(value, float) and isinstance(have, (int, float)) \
            else value == have
        if not same:
            wrong.append(f"{key}={have!r} (an HF {hf['model_type']} config reads back as {value!r})")
    _require(not wrong, f"{ARCHITECTURES[arch]['paddle_class']} -> HF {arch}: the Paddle config has values an HF "
                        f"config cannot hold: {'; '.join(wrong)}. Nothing was written.")
    return hf


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


def select_hf_architecture(paddle_class: Optional[str], where: str) -> str:
    """The HF architecture a paddlenlp class exports to (ARCHITECTURES read backwards), refused by name."""
    by_paddle = {spec["paddle_class"]: arch for arch, spec in ARCHITECTURES.items()}
    _require(paddle_class in by_paddle,
             f"{where}: {paddle_class or 'a model without architectures in config.json'} cannot be exported to "
             f"Hugging Face format; exportable: {', '.join(sorted(by_paddle))}.")
    return by_paddle[paddle_class]


def build_rules(arch: str, cfg: dict):
    family = ARCHITECTURES[arch]["family"]
    if family in ("bert", "roberta"):
        return _bert_like_rules(family, arch, cfg)
    if family == "bart":
        return _bart_rules(arch, cfg)
    return _gpt2_rules(arch, cfg)


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


def _check_layer_norm_eps(model, expected: float, what: str) -> None:
    import paddle

    wrong = [
        f"{name} ({layer._epsilon})"
        for name, layer in model.named_sublayers()
        if isinstance(layer, paddle.nn.LayerNorm) and abs(layer._epsilon - expected) > expected * 1e-6
    ]
    _require(not wrong, f"{what}: paddlenlp LayerNorm epsilon differs from HF ({expected}): {', '.join(wrong)}")
