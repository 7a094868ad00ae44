"""Causal language modelling: texts joined and cut into blocks, next-token loss (position t predicts t+1),
and text generation (greedy, top-k, top-p).

Imports: numpy; paddle inside; of the project `data`.
"""
import numpy as np

from paddle_finetune.training.task import Batch

from paddle_finetune.data.batching import to_tensors
from paddle_finetune.evaluation.perplexity import per_row_sums
from paddle_finetune.data.text import decode_tokens


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def end_of_text_id(tokenizer):
    """GPT tokenizers have an eos token; a BERT-style char vocab ends texts with [SEP]."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


def encode(text, tokenizer):
    return tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))


def build_blocks(texts, tokenizer, block_size):
    """Join the texts, each ended by end-of-text, and cut into full blocks.

    The remainder is dropped (every block then has the same length and no padding),
    unless it is all there is.
    """
    eot = end_of_text_id(tokenizer)
    stream = [i for t in texts for i in encode(t, tokenizer) + [eot]]
    starts = range(0, max(len(stream) - block_size + 1, 1), block_size)
    return [{"input_ids": stream[s:s + block_size]} for s in starts]


def collate(features, rng=None, pad_id=0):
    """Stack blocks; a short block (tiny corpus) is padded and its padding ignored by the loss."""
    length = max(len(f["input_ids"]) for f in features)
    input_ids = np.full((len(features), length), pad_id, dtype="int64")
    labels = np.full((len(features), length), -100, dtype="int64")
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = f["input_ids"]
        labels[i, : len(f["input_ids"])] = f["input_ids"]
    return Batch({"input_ids": input_ids, "labels": labels}, int((labels != -100).sum()))


def clm_logits(model, input_ids):
    out = model(input_ids=input_ids, use_cache=False, return_dict=True)
    return out.logits if hasattr(out, "logits") else out[0]


def clm_loss(model, batch):
    """Next-token cross-entropy: position t predicts token t+1 (paddlenlp's GPT criterion does not shift)."""
    import paddle
    import paddle.nn.functional as F

    logits = clm_logits(model, batch["input_ids"])[:, :-1]
    labels = batch["labels"][:, 1:].flatten()
    positions = paddle.nonzero(labels != -100).flatten()
    chosen = paddle.gather(logits.reshape([-1, logits.shape[-1]]), positions)
    return F.cross_entropy(chosen.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1)).mean()


def row_losses(model, features, pad_id, pad_to=0):
    """[summed next-token loss, predicted tokens] of each block, padded to pad_to (the unit's longest block), so a
    block's numbers do not depend on the blocks beside it; [0.0, 0] for a block that predicts nothing."""
    import paddle
    import paddle.nn.functional as F

    batch = collate(features, pad_id=pad_id).arrays
    width = max(pad_to, batch["input_ids"].shape[1])
    if width > batch["input_ids"].shape[1]:
        extra = width - batch["input_ids"].shape[1]
        batch = {"input_ids": np.pad(batch["input_ids"], ((0, 0), (0, extra)), constant_values=pad_id),
                 "labels": np.pad(batch["labels"], ((0, 0), (0, extra)), constant_values=-100)}
    if not (batch["labels"][:, 1:] != -100).any():
        return [[0.0, 0] for _ in features]
    tensors = to_tensors(batch)
    with paddle.no_grad():
        logits = clm_logits(model, tensors["input_ids"])[:, :-1]
        labels = tensors["labels"][:, 1:].flatten()
        positions = paddle.nonzero(labels != -100).flatten()
        chosen = paddle.gather(logits.reshape([-1, logits.shape[-1]]), positions)
        losses = F.cross_entropy(chosen.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1), reduction="none")
    return per_row_sums(losses.numpy().reshape(-1).tolist(), (positions.numpy() // (width - 1)).tolist(), len(features))


# ----------------------------------------------------------------------------
# generation (also used by tools/generate_text.py)
# ----------------------------------------------------------------------------
STRATEGIES = ("greedy", "top_k", "top_p")


def generate_text(model, tokenizer, prompt, strategy="greedy", max_new_tokens=50, top_k=5, top_p=0.9, temperature=1.0, seed=None):
    """Continue prompt. greedy is deterministic; top_k / top_p sample (seeded when seed is given)."""
    import paddle

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    ids = encode(prompt, tokenizer)
    if not ids:
        ids = [end_of_text_id(tokenizer)]  # an empty prompt starts a new text
    if seed is not None:
        paddle.seed(seed)
    sampling = dict(decode_strategy="sampling", temperature=temperature,
                    top_k=top_k if strategy == "top_k" else 0, top_p=top_p if strategy == "top_p" else 1.0)
    model.eval()
    with paddle.no_grad():
        generated, _ = model.generate(
            input_ids=paddle.to_tensor([ids], dtype="int64"),
            max_new_tokens=max_new_tokens,
            eos_token_id=end_of_text_id(tokenizer),
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_of_text_id(tokenizer),
            use_cache=True,
            **(dict(decode_strategy="greedy_search") if strategy == "greedy" else sampling),
        )
    return decode_tokens(tokenizer, generated[0].numpy())
