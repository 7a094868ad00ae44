"""Helpers shared by the classification and language-modelling trainers and their CLIs.

Kept out of train_utils.py (the engine) because they are about text and tokenizers,
not about the training loop.
"""
import os
import re

import numpy as np

import train_utils as tu
from data_utils import DataError, read_examples, truncate, write_char_vocab

CJK_SPACE = re.compile(r"(?<=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])\s+|\s+(?=[\u2e80-\u9fff\uf900-\ufaff\uff00-\uffef])")


def build_tokenizer(cfg, texts):
    """The pretrained model's tokenizer, or a character vocab written from the training texts."""
    from paddlenlp.transformers import AutoTokenizer, BertTokenizer

    if cfg["pretrained_model"]:
        path = tu.resolve_pretrained(cfg["pretrained_model"], cfg.get("converted_model_dir") or None)
        return AutoTokenizer.from_pretrained(path)
    vocab = os.path.join(cfg["output_dir"], "vocab.txt")
    if tu.is_main_process():
        write_char_vocab(texts, vocab)
    tu.barrier()
    return BertTokenizer(vocab_file=vocab)


def vocab_size(tokenizer):
    return len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else tokenizer.vocab_size


def load_texts(path, column, cfg, max_samples=0):
    """One text per row of a .txt/.json/.jsonl/.tsv/.csv file; bad rows stop with file:line."""
    column = 0 if path.endswith(".txt") else ("text" if column is None else column)
    rows = read_examples(path, {"text": column}, skip_bad_rows=cfg["skip_bad_rows"], log=tu.log)
    return [r["text"] for r in truncate(rows, max_samples)]


def decode_text(tokenizer, ids):
    """Token ids -> text without special tokens; BertTokenizer's spaces between CJK characters are dropped."""
    special = set(tokenizer.all_special_ids)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in special])
    return CJK_SPACE.sub("", tokenizer.convert_tokens_to_string(tokens)).strip()


def resolve_model_dir(path):
    """A model directory as given, or an output_dir: its best checkpoint, else its newest complete one."""
    import json

    if os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(os.path.join(path, "model_config.json")):
        return path
    state_file = os.path.join(path, "trainer_state.json")
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as f:
            best = json.load(f).get("best_checkpoint")
        if best and os.path.isdir(best):
            return best
    newest = tu.latest_checkpoint(path)
    if newest is None:
        raise DataError(f"no model found in {path}: pass a checkpoint-<step> directory, a model directory or an output_dir")
    return newest


def token_weighted_mean(losses_and_counts):
    """Mean loss per predicted token over batches of different sizes."""
    total = sum(loss * n for loss, n in losses_and_counts)
    count = sum(n for _, n in losses_and_counts)
    return total / max(count, 1)


def perplexity(mean_loss):
    """exp(loss), capped so an untrained model's huge loss still logs as a number."""
    return float(np.exp(min(mean_loss, 50.0)))
