"""Summarization with BART: which columns hold the text and the summary, tokenization (labels end with the
model's eos), dynamic-padding batches, the teacher-forced loss over real target tokens, generation with the
run's settings, and ROUGE with the predictions file.

Imports: the standard library and numpy; paddle inside; of the project `errors`, `data`, `evaluation`,
`models.weights`, `reporting` and `speedups`.
"""
import json
import math
import os

import numpy as np

from paddle_finetune import speedups
from paddle_finetune.data.batching import to_tensors
from paddle_finetune.data.examples import read_examples
from paddle_finetune.data.named import SUMMARIZATION_NAME_MAPPING, dataset_columns
from paddle_finetune.data.readers import iter_rows
from paddle_finetune.data.splits import load_splits
from paddle_finetune.data.text import decode_tokens
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.evaluation.perplexity import per_row_sums
from paddle_finetune.evaluation.rouge import DEFAULT_ROUGE_STYLE, rouge_scores
from paddle_finetune.evaluation.sharding import length_sorted_units
from paddle_finetune.models.weights import unwrap_model
from paddle_finetune.reporting.console import log
from paddle_finetune.reporting.progress import progress_bar
from paddle_finetune.runtime.state import note_write
from paddle_finetune.training.task import Batch

# What prediction uses where a model directory has no train_config.json (a converted or foreign model): the values
# train.py's CONFIG ships with (tests/trainers/test_train.py checks that they agree).
PREDICTION_DEFAULTS = {"max_source_length": 192, "max_target_length": 32, "min_target_length": 0, "num_beams": 1,
                       "eval_batch_size": 64, "fast_kernels": True, "rouge_style": DEFAULT_ROUGE_STYLE}

# Column pairs recognised when text_column/summary_column are not given.
KNOWN_COLUMN_PAIRS = [("source", "target"), ("content", "title"), ("content", "summary"), ("text", "summary"),
                      ("document", "summary"), ("article", "highlights"), ("abstract", "title")]

# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def detect_columns(path, has_header="auto"):
    """Pick a known (text, summary) column pair from the first row of a file with named columns."""
    if has_header is False and os.path.splitext(path)[1].lower() in (".csv", ".tsv"):
        raise DataError(f"{path}: has_header=False: set text_column and summary_column by 0-based index")
    for line_no, row in iter_rows(path, has_header=True):
        if isinstance(row, dict):
            for text_col, summary_col in KNOWN_COLUMN_PAIRS:
                if text_col in row and summary_col in row:
                    return text_col, summary_col
            raise DataError(
                f"{path}:{line_no}: cannot tell the text and summary columns apart among {sorted(row)}; "
                "set text_column and summary_column"
            )
        raise DataError(f"{path}: rows without column names: set text_column and summary_column by 0-based index")
    raise DataError(f"{path}: no rows")


def resolve_columns(cfg, path):
    text_col, summary_col = cfg["text_column"], cfg["summary_column"]
    if text_col is None or summary_col is None:
        mapped = SUMMARIZATION_NAME_MAPPING.get(cfg["dataset_name"]) or detect_columns(path, cfg.get("has_header", "auto"))
        text_col = mapped[0] if text_col is None else text_col
        summary_col = mapped[1] if summary_col is None else summary_col
    return text_col, summary_col


def load_split(cfg, path, split, allow_empty_target=False):
    text_col, summary_col = resolve_columns(cfg, path)
    return read_examples(
        path,
        {"source": text_col, "target": summary_col},
        skip_bad_rows=cfg["skip_bad_rows"],
        allow_empty=("target",) if allow_empty_target else (),
        log=log,
        has_header=cfg.get("has_header", "auto"),
    )


SAMPLE_FILES = {"train": os.path.join("sample_summarization", "train.jsonl"), "dev": os.path.join("sample_summarization", "dev.jsonl")}


def named_columns(cfg):
    """{role: column} of a named dataset: text_column/summary_column when set, else its known columns."""
    known = dataset_columns(cfg["dataset_name"]) or {}
    text = cfg["text_column"] if cfg["text_column"] is not None else known.get("text")
    summary = cfg["summary_column"] if cfg["summary_column"] is not None else known.get("summary")
    if text is None or summary is None:
        raise ConfigError(f"dataset_name {cfg['dataset_name']!r}: its columns are not known; set text_column and summary_column")
    return {"source": text, "target": summary}


def load_data(cfg):
    """{split: [{"source", "target"}]}, every row checked before training starts (see data_utils.load_splits)."""
    return load_splits(cfg, lambda split, path: load_split(cfg, path, split, allow_empty_target=(split == "test")),
                       SAMPLE_FILES, named_columns(cfg) if cfg["dataset_name"] else None, log)


def special_ids(tokenizer, model):
    """Generation and label ids come from the model's config: decoder_start is not eos."""
    mc = unwrap_model(model).config
    return {
        "pad": mc.pad_token_id if mc.pad_token_id is not None else tokenizer.pad_token_id,
        "eos": mc.eos_token_id,
        "decoder_start": mc.decoder_start_token_id,
    }


def tokenize_examples(examples, tokenizer, cfg, eos_id):
    """Tokenize once: source ids with the tokenizer's specials; labels end with the model's eos."""
    sources = tokenizer([ex["source"] for ex in examples], max_length=cfg["max_source_length"], truncation=True)["input_ids"]
    targets = tokenizer([ex["target"] for ex in examples], add_special_tokens=False)["input_ids"]
    return [
        {"input_ids": src, "labels": tgt[: cfg["max_target_length"] - 1] + [eos_id]}
        for src, tgt in zip(sources, targets)
    ]


def collate(features, rng=None, pad_id=0, decoder_start_id=2, ignore_pad=True, pad_to=None):
    """Dynamic padding to the longest item, or to pad_to=(src, tgt) lengths when longer (pad-to-max, or the unit
    an evaluation slice came from)."""
    src_len, tgt_len = pad_to or (0, 0)
    src_len = max([src_len] + [len(f["input_ids"]) for f in features])
    tgt_len = max([tgt_len] + [len(f["labels"]) for f in features])
    n = len(features)
    input_ids = np.full((n, src_len), pad_id, dtype="int64")
    attention_mask = np.zeros((n, src_len), dtype="float32")
    labels = np.full((n, tgt_len), -100 if ignore_pad else pad_id, dtype="int64")
    decoder_input_ids = np.full((n, tgt_len), pad_id, dtype="int64")
    for i, f in enumerate(features):
        src, tgt = f["input_ids"], f["labels"]
        input_ids[i, : len(src)] = src
        attention_mask[i, : len(src)] = 1
        labels[i, : len(tgt)] = tgt
        decoder_input_ids[i, 0] = decoder_start_id
        decoder_input_ids[i, 1: len(tgt)] = tgt[:-1]
    real_tokens = int(attention_mask.sum()) + sum(len(f["labels"]) for f in features)
    return Batch({"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
                  "labels": labels}, real_tokens)


def seq2seq_loss(model, batch):
    """Cross-entropy over real target tokens only: the LM head runs just where labels count.

    With dynamic padding most label slots are real anyway; skipping the vocab projection at
    -100 positions saves the single largest matmul's padded share.
    """
    import paddle
    import paddle.nn.functional as F

    hidden = model.bart(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=batch["decoder_input_ids"],
        use_cache=False,
        return_dict=False,
    )[0]
    labels = batch["labels"].flatten()
    positions = paddle.nonzero(labels != -100).flatten()
    real_hidden = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), positions)
    logits = paddle.matmul(real_hidden, model.lm_head_weight, transpose_y=True) + model.final_logits_bias
    return F.cross_entropy(logits.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1)).mean()


# ----------------------------------------------------------------------------
# generation and evaluation
# ----------------------------------------------------------------------------
def decode_ids(tokenizer, ids, eos_id, pad_id):
    """Generated ids -> text, cut at the first eos."""
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[: ids.index(eos_id)]
    return decode_tokens(tokenizer, ids, skip_ids=(pad_id,))


def generation_settings(cfg, ids):
    """The generate() arguments evaluation and prediction use; saved models carry them in generation_config.json."""
    return dict(
        max_new_tokens=cfg["max_target_length"],
        min_length=cfg["min_target_length"],
        decode_strategy="greedy_search" if cfg["num_beams"] <= 1 else "beam_search",
        num_beams=cfg["num_beams"],
        decoder_start_token_id=ids["decoder_start"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
        use_cache=True,
    )


def record_generation_settings(model, cfg, ids):
    """So that generation_config.json in every saved model says how this run generates (not paddlenlp's max 20)."""
    for key, value in generation_settings(cfg, ids).items():
        setattr(model.generation_config, key, value)
    model.generation_config.max_length = cfg["max_target_length"]  # not the model config's 20: both name the summary length
    # paddlenlp rebuilds a generation config it made from the model config (dropping these) unless told it is our own
    model.generation_config._from_model_config = False


def generate_batch(model, features, cfg, ids, pad_to=None):
    """Generated token ids of one batch (a numpy row per feature), padded to the batch's longest source (or pad_to)."""
    import paddle

    batch = collate(features, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"], pad_to=pad_to).arrays
    with paddle.no_grad(), speedups.fast_beam_search(model, enabled=cfg.get("fast_kernels", True)):
        generated, _ = model.generate(
            input_ids=paddle.to_tensor(batch["input_ids"]),
            attention_mask=paddle.to_tensor(batch["attention_mask"]),
            **generation_settings(cfg, ids),
        )
    return generated.numpy()


def generate_ids(model, features, cfg, ids, desc="generate"):
    """Generated token ids (a numpy row per feature, in input order), batched by length for speed: the same
    batches evaluation cuts (evaluation.length_sorted_units)."""
    outputs = [None] * len(features)
    bar = progress_bar(len(features), desc)
    for unit in length_sorted_units([len(f["input_ids"]) for f in features], cfg["eval_batch_size"]):
        for i, row in zip(unit, generate_batch(model, [features[i] for i in unit], cfg, ids)):
            outputs[i] = row
        bar.update(len(unit))
    bar.close()
    return outputs


def generate(model, tokenizer, features, cfg, ids, desc="generate"):
    """Summaries for tokenized features, returned in input order."""
    return [decode_ids(tokenizer, row, ids["eos"], ids["pad"]) for row in generate_ids(model, features, cfg, ids, desc)]


def generated_length(ids, eos_id, pad_id):
    """Generated tokens up to and including the first eos, never padding (HF's gen_len counts tokens too)."""
    ids = [int(i) for i in ids]
    return ids.index(eos_id) + 1 if eos_id in ids else sum(1 for i in ids if i != pad_id)


def unit_lengths(features):
    """(source, target) lengths a unit's rows are padded to: its longest of each."""
    return max(len(f["input_ids"]) for f in features), max(len(f["labels"]) for f in features)


def row_losses(model, features, ids, pad_to=None):
    """[summed teacher-forced loss, target tokens] of each row, from per-token cross-entropy (math.fsum per row:
    a row's sum does not depend on the rows beside it)."""
    import paddle
    import paddle.nn.functional as F

    batch = collate(features, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"], pad_to=pad_to).arrays
    tensors = to_tensors(batch)
    with paddle.no_grad():
        hidden = model.bart(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"],
                            decoder_input_ids=tensors["decoder_input_ids"], use_cache=False, return_dict=False)[0]
        labels = tensors["labels"].flatten()
        positions = paddle.nonzero(labels != -100).flatten()
        real_hidden = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), positions)
        logits = paddle.matmul(real_hidden, model.lm_head_weight, transpose_y=True) + model.final_logits_bias
        losses = F.cross_entropy(logits.astype("float32"), paddle.gather(labels, positions).unsqueeze(-1), reduction="none")
    return per_row_sums(losses.numpy().reshape(-1).tolist(), (positions.numpy() // batch["labels"].shape[1]).tolist(),
                        len(features))


def predict_rows(model, tokenizer, features, cfg, ids, pad_to=None, with_loss=None):
    """Per row: the generated summary and its token count, and (rows with a reference, with_loss[i]) the
    teacher-forced loss as [summed over target tokens, target tokens]. pad_to: the (source, target) lengths of the
    unit the rows belong to, so each row is computed as in the whole unit (evaluation.sharding)."""
    generated = generate_batch(model, features, cfg, ids, pad_to)
    out = [{"prediction": decode_ids(tokenizer, row, ids["eos"], ids["pad"]),
            "gen_tokens": generated_length(row, ids["eos"], ids["pad"])} for row in generated]
    with_loss = [True] * len(features) if with_loss is None else list(with_loss)
    if any(with_loss):
        for record, wanted, loss in zip(out, with_loss, row_losses(model, features, ids, pad_to)):
            if wanted:
                record["loss"] = loss
    return out


def rouge_metrics(predictions, references, style):
    """ROUGE in `style`, and the style's name beside the numbers: "rouge_style" is in every record that holds them
    (metrics.jsonl, all_results.json, the dashboards), since the styles differ by points."""
    return {**rouge_scores(predictions, references, style), "rouge_style": style}


def score_split(examples, units, outputs, out_path, rouge_style=DEFAULT_ROUGE_STYLE):
    """ROUGE in rouge_style (when every row has a reference), loss (over the rows with one), gen_len (tokens) and
    gen_chars; writes the predictions file (atomically). outputs[u]: unit u's per-row outputs (predict_rows).
    Returns (metrics, predictions in row order)."""
    predictions, gen_tokens = [None] * len(examples), [0] * len(examples)
    losses = []
    for unit, unit_outputs in zip(units, outputs):
        for i, out in zip(unit, unit_outputs):
            predictions[i], gen_tokens[i] = out["prediction"], out["gen_tokens"]
            if "loss" in out:
                losses.append(out["loss"])
    references = [ex["target"] for ex in examples]
    metrics = rouge_metrics(predictions, references, rouge_style) if all(references) else {}
    loss_tokens = sum(n for _, n in losses)
    if loss_tokens:
        metrics["loss"] = math.fsum(total for total, _ in losses) / loss_tokens
    metrics["gen_len"] = float(np.mean(gen_tokens)) if predictions else 0.0
    metrics["gen_chars"] = float(np.mean([len(p) for p in predictions])) if predictions else 0.0
    note_write(out_path)
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for ex, pred in zip(examples, predictions):
            f.write(json.dumps({"source": ex["source"], "reference": ex["target"], "prediction": pred}, ensure_ascii=False) + "\n")
    os.replace(tmp, out_path)
    return metrics, predictions
