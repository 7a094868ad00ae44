"""Vocabularies and decoding: the character vocab a model trained from scratch gets, built from its own
training data, and token ids back to text without BertTokenizer's spaces around CJK characters.

Imports: the standard library only (the tokenizer is given).
"""
import os
import re

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_char_vocab(texts, path, min_freq=1, extra_tokens=()):
    """A BertTokenizer vocab.txt built from the data itself, for models trained from scratch.

    BertTokenizer splits CJK text into single characters, so one entry per character
    covers Chinese; ASCII letters and digits also get '##' forms so WordPiece can spell
    any Latin word letter by letter instead of mapping it to [UNK].
    """
    from collections import Counter

    counts = Counter(ch for text in texts for ch in text.lower() if not ch.isspace())
    chars = [c for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n >= min_freq]
    ascii_alnum = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokens = list(BERT_SPECIAL_TOKENS) + list(extra_tokens)
    seen = set(tokens)
    for tok in chars + ascii_alnum + ["##" + c for c in ascii_alnum]:
        if tok not in seen:
            seen.add(tok)
            tokens.append(tok)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(tokens) + "\n")
    return path

CJK_SPACE = re.compile(r"(?<=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])\s+|\s+(?=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])")


def decode_tokens(tokenizer, ids, skip_ids=()):
    """Token ids -> text without special tokens; BertTokenizer's spaces around CJK characters are dropped."""
    skip = set(tokenizer.all_special_ids) | set(skip_ids)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in skip])
    return CJK_SPACE.sub("", tokenizer.convert_tokens_to_string(tokens)).strip()
