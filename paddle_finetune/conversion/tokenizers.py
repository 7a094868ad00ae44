"""The tokenizer of a converted model: which files make a tokenizer, the paddlenlp tokenizer rebuilt from an HF
directory's vocabulary (WordPiece or BPE), checked to fit the model's embeddings, and the other way: a paddlenlp
tokenizer written as files transformers reads.

Imports: the standard library; paddlenlp inside; of the project `errors`.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Tuple

from paddle_finetune.conversion.architectures import _require
from paddle_finetune.errors import ConversionError


# Files that hold a tokenizer's vocabulary (HF or paddlenlp): a directory with none of
# them has no tokenizer. tokenizer_config.json alone is not enough to build one.
TOKENIZER_VOCAB_FILES = (
    "vocab.txt", "vocab.json", "tokenizer.json",
    "spiece.model", "sentencepiece.bpe.model", "sentencepiece.model", "spm.model", "tokenizer.model",
)
TOKENIZER_SIDE_FILES = ("merges.txt", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")

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
# Paddle -> HF: the same vocabulary files, with an HF tokenizer_config.json.
# --------------------------------------------------------------------------
# paddlenlp tokenizer class -> the HF tokenizer class that reads its files (PADDLE_TOKENIZER_CLASSES read
# backwards: RobertaChineseTokenizer is a BERT WordPiece tokenizer in HF).
HF_TOKENIZER_CLASSES = {
    "BertTokenizer": "BertTokenizer",
    "RobertaChineseTokenizer": "BertTokenizer",
    "RobertaBPETokenizer": "RobertaTokenizer",
    "BartTokenizer": "BartTokenizer",
    "GPTTokenizer": "GPT2Tokenizer",
}
_WORDPIECE_OPTIONS = ("do_lower_case", "do_basic_tokenize", "tokenize_chinese_chars", "strip_accents")


def _wordpiece_options(tokenizer) -> dict:
    basic = getattr(tokenizer, "basic_tokenizer", None)
    out = {"do_lower_case": bool(getattr(tokenizer, "do_lower_case", True)),
           "do_basic_tokenize": bool(getattr(tokenizer, "do_basic_tokenize", True))}
    if basic is not None:
        out["tokenize_chinese_chars"] = bool(basic.tokenize_chinese_chars)
        out["strip_accents"] = basic.strip_accents
    return out


def write_hf_tokenizer(tokenizer, dst_dir: str, where: str) -> str:
    """Write a paddlenlp tokenizer as files transformers' AutoTokenizer reads; returns the HF class name.

    The vocabulary files are paddlenlp's own (save_resources: vocab.txt, or vocab.json + merges.txt, which
    HF names the same); tokenizer_config.json and special_tokens_map.json are written in HF's form.
    """
    cls_name = type(tokenizer).__name__
    _require(cls_name in HF_TOKENIZER_CLASSES,
             f"{where}: its tokenizer ({cls_name}) has no Hugging Face counterpart this exporter writes; "
             f"exportable: {', '.join(sorted(HF_TOKENIZER_CLASSES))}.")
    hf_class = HF_TOKENIZER_CLASSES[cls_name]
    tokenizer.save_resources(dst_dir)
    set_tokens = getattr(tokenizer, "special_tokens_map", None) or {}  # only those set (no "not set" log lines)
    specials = {key: str(_token_str(set_tokens[key]) or set_tokens[key]) for key in SPECIAL_TOKEN_KEYS if key in set_tokens}
    config = {"tokenizer_class": hf_class, **specials}
    if hf_class == "BertTokenizer":
        config.update(_wordpiece_options(tokenizer))
    else:
        config.update(errors=getattr(tokenizer, "errors", "replace"),
                      add_prefix_space=bool(getattr(tokenizer, "add_prefix_space", False)))
    max_len = getattr(tokenizer, "model_max_length", None)
    if isinstance(max_len, int) and 0 < max_len <= 1_000_000:
        config["model_max_length"] = max_len
    added = dict(getattr(tokenizer, "added_tokens_encoder", None) or {})
    with open(os.path.join(dst_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=2)
    with open(os.path.join(dst_dir, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(specials, f, ensure_ascii=False, indent=2)
    if added:  # tokens added on top of the vocabulary files, with their ids (HF's slow tokenizers read this)
        with open(os.path.join(dst_dir, "added_tokens.json"), "w", encoding="utf-8") as f:
            json.dump({str(k): int(v) for k, v in added.items()}, f, ensure_ascii=False, indent=2)
    return hf_class

