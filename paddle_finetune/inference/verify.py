"""The check an export makes before it is published: the exported graphs, on their Paddle Inference predictors,
against the dygraph model, through the prediction code itself (tasks.*) on texts made from the tokenizer's own
vocabulary: logits within a tolerance, and for generation the same token ids, greedy and beam search, with the
run's settings.

Imports: the standard library and numpy; paddle inside the functions; of the project `conversion.verify` (the
sample texts), `tasks` and `inference.predictor`.
"""
import json
import os

import numpy as np

from paddle_finetune.conversion.verify import sample_texts


def _texts(tokenizer):
    """Four texts of different lengths, so batches are padded."""
    base = sample_texts(tokenizer)
    own = base[-1]
    return [own, own[: max(1, len(own) // 2)], base[0], own[: max(1, len(own) // 4)]]


def _max_diff(a, b, mask=None):
    a, b = np.asarray(a, dtype="float32"), np.asarray(b, dtype="float32")
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a - b)
    return float((diff[mask] if mask is not None else diff).max())


def _positions(model):
    from paddle_finetune.models.loading import usable_positions

    return usable_positions(model) or 10**9


def _run_config(directory, defaults):
    cfg = dict(defaults)
    path = os.path.join(directory, "train_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            cfg.update(json.load(f))
    return cfg


def _classification(model, exported, tokenizer, directory, result):
    from paddle_finetune.data.batching import to_tensors
    from paddle_finetune.tasks.classification import PREDICTION_DEFAULTS, collate, forward_logits, tokenize_rows

    cfg = _run_config(directory, PREDICTION_DEFAULTS)
    rows = [{"text": t} for t in _texts(tokenizer)]
    if cfg.get("text_pair_column") is not None:
        rows = [dict(r, text_pair=r["text"][::-1] or "a") for r in rows]
    length = min(cfg["max_seq_length"], _positions(model))  # as the prediction tool allows it
    batch = collate(tokenize_rows(rows, tokenizer, length), pad_id=tokenizer.pad_token_id).arrays
    mask = batch["attention_mask"].astype(bool)
    logits = [forward_logits(m, to_tensors(batch)).numpy() for m in (model, exported)]
    result["max_abs_diff"]["logits"] = _max_diff(*logits)
    labels = [row.argmax(-1).tolist() for row in logits]
    if labels[0] != labels[1]:
        result["mismatches"]["labels"] = f"dygraph {labels[0]} vs exported {labels[1]}"
    result["rows"] = int(mask.shape[0])


def _masked_lm(model, exported, tokenizer, result):
    import paddle

    from paddle_finetune.tasks.masked_lm import encode_with_masks, mlm_logits

    encoded = [encode_with_masks(t, tokenizer)[: _positions(model)] for t in _texts(tokenizer)]
    width = max(len(ids) for ids in encoded)
    ids = np.full((len(encoded), width), tokenizer.pad_token_id, dtype="int64")
    mask = np.zeros((len(encoded), width), dtype="float32")
    for i, row in enumerate(encoded):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
        ids[i, len(row) // 2] = tokenizer.mask_token_id  # as fill_mask sees it
    with paddle.no_grad():
        logits = [mlm_logits(m, paddle.to_tensor(ids), paddle.to_tensor(mask)).numpy() for m in (model, exported)]
    result["max_abs_diff"]["logits"] = _max_diff(*logits, mask.astype(bool))
    result["rows"] = len(encoded)


def _causal_lm(model, exported, tokenizer, result):
    import paddle

    from paddle_finetune.tasks.causal_lm import clm_logits, encode, generate_text

    texts = _texts(tokenizer)
    ids = [encode(t, tokenizer) for t in texts]
    block = max(1, min([len(i) for i in ids if i] + [_positions(model) - 8]))
    batch = paddle.to_tensor(np.array([i[:block] for i in ids if len(i) >= block], dtype="int64"))
    with paddle.no_grad():
        logits = [clm_logits(m, batch).numpy() for m in (model, exported)]
    result["max_abs_diff"]["logits"] = _max_diff(*logits)
    for prompt in texts[1:3]:
        prompt = prompt[:20]
        outputs = [generate_text(m, tokenizer, prompt, "greedy", max_new_tokens=8) for m in (model, exported)]
        if outputs[0] != outputs[1]:
            result["mismatches"][f"greedy continuation of {prompt!r}"] = f"dygraph {outputs[0]!r} vs exported {outputs[1]!r}"
    result["rows"] = int(batch.shape[0])


def _summarization(model, exported, tokenizer, directory, settings, result):
    from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS, generate_ids, special_ids, tokenize_examples

    cfg = _run_config(directory, PREDICTION_DEFAULTS)
    cfg.update(settings or {})
    cfg["max_source_length"] = min(cfg["max_source_length"], _positions(model))
    ids = special_ids(tokenizer, model)
    features = tokenize_examples([{"source": t, "target": ""} for t in _texts(tokenizer)], tokenizer, cfg, ids["eos"])
    # Greedy, and beam search with the run's beams (at least 2, so the beam path is checked).
    for beams in (1, max(2, int(cfg["num_beams"]))):
        run = dict(cfg, num_beams=beams)
        rows = [[r.tolist() for r in generate_ids(m, features, run, ids, desc="check")] for m in (model, exported)]
        name = "greedy" if beams == 1 else f"beam search ({beams} beams)"
        result["decoded"][name] = len(rows[0])
        if rows[0] != rows[1]:
            first = next(i for i, (a, b) in enumerate(zip(*rows)) if a != b)
            result["mismatches"][name] = f"row {first}: dygraph {rows[0][first]} vs exported {rows[1][first]}"
    result["rows"] = len(features)


def verify_exported(directory, task, model, tokenizer, tolerance, settings=None):
    """{"passed", "max_abs_diff": {output: diff}, "mismatches": {what: detail}, ...} for an exported directory."""
    from paddle_finetune.inference.predictor import load_exported

    _, exported = load_exported(directory)
    result = {"tolerance": tolerance, "max_abs_diff": {}, "mismatches": {}, "decoded": {}}
    if task == "classification":
        _classification(model, exported, tokenizer, directory, result)
    elif task == "masked_lm":
        _masked_lm(model, exported, tokenizer, result)
    elif task == "causal_lm":
        _causal_lm(model, exported, tokenizer, result)
    else:
        _summarization(model, exported, tokenizer, directory, settings, result)
    result["passed"] = not result["mismatches"] and all(d <= tolerance for d in result["max_abs_diff"].values())
    return result
