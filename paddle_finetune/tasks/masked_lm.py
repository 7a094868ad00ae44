"""Masked language modelling: tokens with word ids (jieba words for whole-word masking), BERT masking drawn
per batch (80% [MASK], 10% random, 10% unchanged), the loss over masked tokens, evaluation batches masked once
with a fixed seed, and fill-mask.

Imports: numpy; paddle and jieba inside; of the project `data` and `models.loading`.
"""
import numpy as np

from paddle_finetune.training.task import Batch

from paddle_finetune.data.batching import to_tensors
from paddle_finetune.evaluation.perplexity import per_row_sums
from paddle_finetune.models.loading import vocab_size

INITIAL_MODEL_DIR = "initial_model"
CLOZE_FILE = "cloze_check.json"

# ----------------------------------------------------------------------------
# tokenization: ids plus word ids (tokens that are masked together share one)
# ----------------------------------------------------------------------------
def jieba_words(text):
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)
    return [w for w in jieba.cut(text) if w.strip()]


def tokenize_with_words(text, tokenizer, whole_word_mask):
    """(ids, word_ids) without special tokens. Without whole-word masking every token is its own word."""
    if not whole_word_mask:
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
        return ids, list(range(len(ids)))
    ids, word_ids = [], []
    for w, word in enumerate(jieba_words(text)):
        piece = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
        ids += piece
        word_ids += [w] * len(piece)
    return ids, word_ids


def build_examples(texts, tokenizer, block_size, line_by_line, whole_word_mask):
    """Features {"input_ids", "word_ids"} with [CLS] ... [SEP]; word id -1 marks tokens never masked.

    line_by_line: one example per text, truncated. Otherwise the texts are joined (each
    followed by [SEP]) and cut into full blocks; the remainder is dropped unless it is all there is.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    body = block_size - 2
    tokenized = [tokenize_with_words(t, tokenizer, whole_word_mask) for t in texts]
    if line_by_line:
        pieces = [(ids[:body], words[:body]) for ids, words in tokenized if ids]
    else:
        stream_ids, stream_words, offset = [], [], 0
        for ids, words in tokenized:
            stream_ids += ids + [sep_id]
            stream_words += [w + offset for w in words] + [-1]
            offset += len(words) + 1  # word ids stay unique across texts
        starts = list(range(0, max(len(stream_ids) - body + 1, 1), body))
        pieces = [(stream_ids[s:s + body], stream_words[s:s + body]) for s in starts]
    return [{"input_ids": [cls_id] + ids + [sep_id], "word_ids": [-1] + words + [-1]} for ids, words in pieces]


# ----------------------------------------------------------------------------
# masking
# ----------------------------------------------------------------------------
def mask_tokens(input_ids, word_ids, rng, mask_id, random_ids, mlm_probability=0.15):
    """BERT masking: choose words with probability mlm_probability, then per chosen token
    80% [MASK], 10% a random token, 10% unchanged. Returns (masked input_ids, labels).

    Positions with word id < 0 (special tokens, padding) are never chosen. At least one
    token per batch is chosen, so a short batch never yields a loss over zero tokens.
    """
    input_ids = input_ids.copy()
    masked = np.zeros(input_ids.shape, dtype=bool)
    for row in range(input_ids.shape[0]):
        words = np.unique(word_ids[row][word_ids[row] >= 0])
        chosen = words[rng.random_sample(len(words)) < mlm_probability]
        masked[row] = np.isin(word_ids[row], chosen) & (word_ids[row] >= 0)
    if not masked.any():
        rows = [r for r in range(input_ids.shape[0]) if (word_ids[r] >= 0).any()]
        if rows:
            row = rows[rng.randint(len(rows))]
            masked[row] = word_ids[row] == rng.choice(np.unique(word_ids[row][word_ids[row] >= 0]))
    labels = np.where(masked, input_ids, -100)
    draw = rng.random_sample(input_ids.shape)
    to_mask = masked & (draw < 0.8)
    to_random = masked & (draw >= 0.8) & (draw < 0.9)
    input_ids[to_mask] = mask_id
    input_ids[to_random] = rng.choice(random_ids, size=int(to_random.sum()))
    return input_ids, labels


def collate(features, rng, pad_id, mask_id, random_ids, mlm_probability):
    """Pad to the longest item, then mask with this batch's own RNG (seeded per seed, epoch and batch)."""
    length = max(len(f["input_ids"]) for f in features)
    n = len(features)
    input_ids = np.full((n, length), pad_id, dtype="int64")
    word_ids = np.full((n, length), -1, dtype="int64")
    attention_mask = np.zeros((n, length), dtype="float32")
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = f["input_ids"]
        word_ids[i, : len(f["word_ids"])] = f["word_ids"]
        attention_mask[i, : len(f["input_ids"])] = 1
    masked_ids, labels = mask_tokens(input_ids, word_ids, rng, mask_id, random_ids, mlm_probability)
    return Batch({"input_ids": masked_ids, "attention_mask": attention_mask, "labels": labels}, int(attention_mask.sum()))


def random_token_ids(tokenizer):
    """Replacement candidates for the 10% random tokens: the vocabulary minus special tokens."""
    return np.setdiff1d(np.arange(vocab_size(tokenizer)), np.array(tokenizer.all_special_ids, dtype="int64"))


def mlm_logits(model, input_ids, attention_mask):
    out = model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
    return out.logits if hasattr(out, "logits") else out[0]


def mlm_loss(model, batch):
    """Mean cross-entropy over the masked tokens only (the -100 positions are gathered away,
    not averaged in as zeros)."""
    import paddle
    import paddle.nn.functional as F

    logits = mlm_logits(model, batch["input_ids"], batch["attention_mask"])
    labels = batch["labels"].flatten()
    positions = paddle.nonzero(labels != -100).flatten()
    chosen = paddle.gather(logits.reshape([-1, logits.shape[-1]]), positions)
    return F.cross_entropy(chosen.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1)).mean()


EVAL_PAD = {"attention_mask": 0, "labels": -100}  # what evaluation batches pad with besides input_ids' pad id


def fixed_eval_batches(features, batch_size, seed, collate_fn, pad_id=0):
    """Batches masked once with a fixed seed, row by row (each row with its own RNG, at least one masked token in
    a row that has any), then padded together: every evaluation scores the same masked tokens, whatever
    eval_batch_size cuts the rows into."""
    rows = [collate_fn([f], np.random.RandomState((seed * 1000003 + i) % (2**32))).arrays for i, f in enumerate(features)]
    batches = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        width = max(r["input_ids"].shape[1] for r in chunk)
        arrays = {key: np.concatenate([np.pad(r[key], ((0, 0), (0, width - r[key].shape[1])),
                                              constant_values=EVAL_PAD.get(key, pad_id)) for r in chunk])
                  for key in chunk[0]}
        batches.append(Batch(arrays, int(arrays["attention_mask"].sum())))
    return batches


def row_losses(model, arrays):
    """[summed loss over its masked tokens, masked tokens] of each row of a pre-masked batch's arrays (rows of
    one, padded to its length: a row's numbers do not depend on the rows beside it)."""
    import paddle
    import paddle.nn.functional as F

    if not (arrays["labels"] != -100).any():  # no masked token in these rows: nothing to gather
        return [[0.0, 0] for _ in range(arrays["labels"].shape[0])]
    tensors = to_tensors(arrays)
    with paddle.no_grad():
        logits = mlm_logits(model, tensors["input_ids"], tensors["attention_mask"])
        labels = tensors["labels"].flatten()
        positions = paddle.nonzero(labels != -100).flatten()
        chosen = paddle.gather(logits.reshape([-1, logits.shape[-1]]), positions)
        losses = F.cross_entropy(chosen.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1), reduction="none")
    return per_row_sums(losses.numpy().reshape(-1).tolist(), (positions.numpy() // arrays["labels"].shape[1]).tolist(),
                        arrays["labels"].shape[0])


def unit_row_losses(model, batch, unit, rows):
    """row_losses of `rows`, a contiguous slice of `unit`, whose pre-masked batch is `batch`."""
    start = rows[0] - unit[0] if rows else 0
    return row_losses(model, {k: v[start:start + len(rows)] for k, v in batch.arrays.items()})


# ----------------------------------------------------------------------------
# fill-mask (also used by tools/fill_mask.py)
# ----------------------------------------------------------------------------
def encode_with_masks(text, tokenizer):
    """[CLS] text [SEP] ids where each literal mask token (e.g. "[MASK]") becomes the mask id."""
    pieces = text.split(tokenizer.mask_token)
    ids = [tokenizer.cls_token_id]
    for k, piece in enumerate(pieces):
        ids += tokenizer.convert_tokens_to_ids(tokenizer.tokenize(piece)) if piece.strip() else []
        if k < len(pieces) - 1:
            ids.append(tokenizer.mask_token_id)
    return ids + [tokenizer.sep_token_id]


def fill_mask(model, tokenizer, text, top_k=5):
    """For each mask in text, the top_k (token, probability) pairs, masks predicted independently."""
    import paddle
    import paddle.nn.functional as F

    ids = encode_with_masks(text, tokenizer)
    positions = [i for i, t in enumerate(ids) if t == tokenizer.mask_token_id]
    if not positions:
        raise ValueError(f"no {tokenizer.mask_token} in {text!r}")
    model.eval()
    with paddle.no_grad():
        x = paddle.to_tensor([ids], dtype="int64")
        logits = mlm_logits(model, x, paddle.ones(x.shape, dtype="float32"))
        probs = F.softmax(logits[0].astype("float32"), axis=-1).numpy()
    results = []
    for pos in positions:
        top = np.argsort(-probs[pos])[:top_k]
        results.append([(tokenizer.convert_ids_to_tokens(int(t)), round(float(probs[pos][t]), 4)) for t in top])
    return results


def best_fill(results):
    return "".join(candidates[0][0] for candidates in results)


def cloze_record(model, tokenizer, cfg):
    results = fill_mask(model, tokenizer, cfg["probe_text"], cfg["probe_top_k"])
    return {"filled": best_fill(results), "top_k": results}

def answer_in_top_k(top_k, answer):
    """Per mask: is the expected character among its top-k candidates (masks are filled independently)."""
    return [len(answer) > i and answer[i] in [token for token, _ in candidates] for i, candidates in enumerate(top_k)]
