"""Hugging Face (PyTorch) <-> PaddleNLP checkpoint conversion.

Holds the per-architecture weight-mapping tables, the config translation, the
safe weight readers, the tokenizer rebuild, ``convert`` / ``verify_conversion``
and the trainer-facing helpers (``is_hf_checkpoint_dir``,
``tools/convert_hf_to_paddle.py`` is the command-line front end; the engine calls
``ensure_paddle_checkpoint`` for a pretrained_model that is a local HF directory.

Modules: `architectures` (the per-architecture weight-mapping tables and config translation, read both
ways), `hf_weights` (reading HF weight files safely, and mapping them both ways), `tokenizers`, `to_paddle`
(the conversion, its marker and the trainer-facing helpers), `to_hf` (the export of a Paddle model to HF
format, tools/export_hf.py) and `verify` (HF and Paddle on the same inputs, both directions).

Imports: at module level only the standard library and numpy (safetensors when
reading weights); paddle, paddlenlp, torch and transformers are imported lazily
inside the functions that need them, so ``is_hf_checkpoint_dir`` and
``has_tokenizer`` stay cheap. Of the project `errors` and `checkpoints.ownership` (the DST rule); `to_hf` also
`checkpoints` and `models.weights` (the Paddle model it exports); this package's __init__ imports neither.

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

from paddle_finetune.conversion.to_paddle import (  # noqa: F401
    convert,
    default_cache_dir,
    ensure_paddle_checkpoint,
    has_tokenizer,
    is_hf_checkpoint_dir,
    no_tokenizer_message,
)
from paddle_finetune.errors import ConversionError, VerificationError  # noqa: F401
