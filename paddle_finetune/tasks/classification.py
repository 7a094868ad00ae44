"""Text (and text-pair) classification: label names from the data, tokenization, dynamic-padding batches,
cross-entropy, softmax probabilities in the batches evaluation cuts, and the reports (classification_report,
confusion matrix, predictions).

Imports: the standard library and numpy; paddle and paddlenlp inside; of the project `errors`, `data`,
`evaluation`, `models.weights` and `reporting`.
"""
import json
import os
from collections import Counter

import numpy as np

from paddle_finetune.data.batching import to_tensors
from paddle_finetune.data.examples import read_examples
from paddle_finetune.data.named import dataset_columns
from paddle_finetune.data.readers import is_number_text
from paddle_finetune.data.splits import load_splits
from paddle_finetune.errors import DataError
from paddle_finetune.evaluation.sharding import length_sorted_units
from paddle_finetune.models.weights import unwrap_model
from paddle_finetune.reporting.console import log
from paddle_finetune.reporting.files import write_json_atomic
from paddle_finetune.reporting.progress import progress_bar
from paddle_finetune.runtime.state import note_write
from paddle_finetune.training.task import Batch

LABEL_MAP_FILE = "label_map.json"

# What prediction uses where a model directory has no train_config.json: the values train_classification.py's
# CONFIG ships with (tests/tasks/test_classification.py checks that they agree).
PREDICTION_DEFAULTS = {"max_seq_length": 128, "text_pair_column": None, "eval_batch_size": 64}

# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def default_if_none(value, default):
    return default if value is None else value


def number_label(text):
    """The one spelling of a label that reads as a number: "1", "1.0", "01" and "1e0" -> "1"; "0.50" -> "0.5"."""
    value = float(text)
    return str(int(value)) if value.is_integer() else repr(value)


def numeric_labels(rows, source, log=log):
    """When every label of a file reads as a number, labels are numbers: "1" and "1.0" (pandas writes an int
    column with missing values as floats) are one class. Rows are changed in place and returned; the log says how
    many labels were respelled."""
    labels = [r["label"] for r in rows if "label" in r]
    if not labels or not all(is_number_text(label) for label in labels):
        return rows
    respelled = Counter()
    for r in rows:
        canonical = number_label(r["label"])
        if canonical != r["label"]:
            respelled[(r["label"], canonical)] += 1
            r["label"] = canonical
    if respelled:
        shown = ", ".join(f"{a!r} -> {b!r} ({n})" for (a, b), n in sorted(respelled.items())[:5])
        log(f"{source}: every label reads as a number, so labels are compared as numbers: {shown}"
            + (" ..." if len(respelled) > 5 else ""))
    return rows


def label_names_from(rows):
    """Sorted label names; all-numeric labels sort as numbers so "10" follows "9"."""
    names = {r["label"] for r in rows}
    numeric = all(is_number_text(n) for n in names)
    return sorted(names, key=(lambda n: (float(n), n)) if numeric else None)


def describe_labels(rows, label_names, limit=20):
    """The log line naming the classes and their training rows: "labels (3), rows each: 0 (120), 1 (80), 2 (4)"."""
    counts = Counter(r["label"] for r in rows)
    shown = ", ".join(f"{name} ({counts.get(name, 0)})" for name in label_names[:limit])
    return f"labels ({len(label_names)}), training rows each: {shown}" + (" ..." if len(label_names) > limit else "")


def check_labels(rows, label2id, path):
    unknown = sorted({r["label"] for r in rows} - set(label2id))
    if unknown:
        raise DataError(f"{path}: label(s) {unknown[:5]} not in the training data's labels {sorted(label2id)[:20]}")


SAMPLE_FILES = {"train": os.path.join("sample_classification", "train.tsv"), "dev": os.path.join("sample_classification", "dev.tsv")}


def split_columns(cfg):
    """{role: column}: the configured columns, else the named dataset's known ones, else "text"/"label"."""
    known = (dataset_columns(cfg["dataset_name"]) if cfg.get("dataset_name") else None) or {}
    columns = {"text": default_if_none(cfg["text_column"], known.get("text", "text")),
               "label": default_if_none(cfg["label_column"], known.get("label", "label"))}
    if cfg["text_pair_column"] is not None:
        columns["text_pair"] = cfg["text_pair_column"]
    return columns


def load_data(cfg):
    """{split: rows}, every row checked before training starts (see data.splits.load_splits); labels that all read
    as numbers are compared as numbers, per file (per split of a named dataset)."""
    if cfg.get("dataset_name"):
        data = load_splits(cfg, None, SAMPLE_FILES, split_columns(cfg), log)
        return {split: numeric_labels(rows, f"dataset {cfg['dataset_name']}/{split}") for split, rows in data.items()}
    return load_splits(cfg, lambda split, path: numeric_labels(read_examples(path, split_columns(cfg), skip_bad_rows=cfg["skip_bad_rows"],
                                                                          log=log, has_header=cfg.get("has_header", "auto")), path),
                       SAMPLE_FILES, split_columns(cfg) if cfg.get("dataset_name") else None, log)


def tokenize_rows(rows, tokenizer, max_seq_length, label2id=None):
    """Tokenize once; pairs get [CLS] a [SEP] b [SEP] with token types 0/1."""
    texts = [r["text"] for r in rows]
    pairs = [r["text_pair"] for r in rows] if rows and "text_pair" in rows[0] else None
    kwargs = {"text_pair": pairs} if pairs else {}
    encoded = tokenizer(texts, max_length=max_seq_length, truncation=True, return_token_type_ids=True, **kwargs)
    features = []
    for i, ids in enumerate(encoded["input_ids"]):
        token_types = encoded["token_type_ids"][i] if "token_type_ids" in encoded else [0] * len(ids)
        feature = {"input_ids": ids, "token_type_ids": token_types}
        if label2id is not None:
            feature["label"] = label2id[rows[i]["label"]]
        features.append(feature)
    return features


def collate(features, rng=None, pad_id=0, pad_to=0):
    """Dynamic padding to the longest item in the batch (or to pad_to, when longer: the unit a slice came from)."""
    length = max([pad_to or 0] + [len(f["input_ids"]) for f in features])
    n = len(features)
    input_ids = np.full((n, length), pad_id, dtype="int64")
    token_type_ids = np.zeros((n, length), dtype="int64")
    attention_mask = np.zeros((n, length), dtype="float32")
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = f["input_ids"]
        token_type_ids[i, : len(f["token_type_ids"])] = f["token_type_ids"]
        attention_mask[i, : len(f["input_ids"])] = 1
    arrays = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask}
    if "label" in features[0]:
        arrays["labels"] = np.array([f["label"] for f in features], dtype="int64")
    return Batch(arrays, int(attention_mask.sum()))


def forward_logits(model, batch):
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"], return_dict=True)
    return out.logits if hasattr(out, "logits") else out[0]


def classification_loss(model, batch):
    import paddle.nn.functional as F

    return F.cross_entropy(forward_logits(model, batch).astype("float32"), batch["labels"].unsqueeze(-1)).mean()


def predict_batch(model, features, pad_id, pad_to=0):
    """Softmax probabilities of one batch, [len(features), num_labels]."""
    import paddle
    import paddle.nn.functional as F

    batch = collate([{k: v for k, v in f.items() if k != "label"} for f in features], pad_id=pad_id, pad_to=pad_to).arrays
    with paddle.no_grad():
        logits = forward_logits(model, to_tensors(batch))
    return F.softmax(logits.astype("float32"), axis=-1).numpy()


def eval_rows(model, features, pad_id, pad_to=0):
    """Per row, from one forward pass over the rows padded to pad_to (the length of the unit they belong to):
    {"probs": softmax probabilities, "loss": its cross-entropy (None without a label)}. A row's numbers are the
    same whichever rows share its batch, so evaluation can cut a unit between ranks (evaluation.sharding)."""
    import paddle
    import paddle.nn.functional as F

    batch = collate(features, pad_id=pad_id, pad_to=pad_to).arrays
    with paddle.no_grad():
        logits = forward_logits(model, to_tensors({k: v for k, v in batch.items() if k != "labels"})).astype("float32")
        probs = F.softmax(logits, axis=-1).numpy()
        losses = [None] * len(features)
        if "labels" in batch:
            labels = paddle.to_tensor(batch["labels"]).unsqueeze(-1)
            losses = [float(v) for v in F.cross_entropy(logits, labels, reduction="none").numpy().reshape(-1)]
    return [{"probs": p.tolist(), "loss": loss} for p, loss in zip(probs, losses)]


def predict_probabilities(model, features, batch_size, pad_id, desc="predict"):
    """Softmax probabilities [n, num_labels], in input order, in the batches evaluation cuts (by length)."""
    probs = [None] * len(features)
    bar = progress_bar(len(features), desc)
    for unit in length_sorted_units([len(f["input_ids"]) for f in features], batch_size):
        for i, row in zip(unit, predict_batch(model, [features[i] for i in unit], pad_id)):
            probs[i] = row
        bar.update(len(unit))
    bar.close()
    return np.stack(probs) if probs else np.zeros((0, 0))


# ----------------------------------------------------------------------------
# evaluation reports
# ----------------------------------------------------------------------------
def write_reports(report, label_names, output_dir, step, split="dev"):
    """classification_report.json and confusion_matrix.tsv (rows: gold, columns: predicted); _test for the test split."""
    suffix = "" if split == "dev" else f"_{split}"
    write_json_atomic(os.path.join(output_dir, f"classification_report{suffix}.json"), {"step": step, "labels": label_names, **report})
    lines = ["gold\\predicted\t" + "\t".join(label_names)]
    lines += [name + "\t" + "\t".join(str(c) for c in row) for name, row in zip(label_names, report["confusion_matrix"])]
    path = os.path.join(output_dir, f"confusion_matrix{suffix}.tsv")
    note_write(path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def write_predictions(path, rows, probs, label_names):
    """One JSON line per row: its text(s), gold label when known, predicted label and probability."""
    note_write(path)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row, p in zip(rows, probs):
            best = int(np.argmax(p))
            record = {**row, "prediction": label_names[best] if best < len(label_names) else str(best), "probability": round(float(p[best]), 4)}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def label_names_of(model, model_dir=None):
    """The label map saved with a model (label_map.json), else its config's id2label."""
    path = os.path.join(model_dir, LABEL_MAP_FILE) if model_dir else None
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            id2label = json.load(f)["id2label"]
    else:
        id2label = getattr(unwrap_model(model).config, "id2label", None) or {}
    return [id2label.get(str(i), id2label.get(i, str(i))) for i in range(len(id2label))]


def majority_accuracy(train_labels, dev_labels):
    """Accuracy (0-100) of always predicting the most frequent training label: the bar to beat."""
    majority = max(set(train_labels), key=train_labels.count)
    return round(100.0 * sum(1 for y in dev_labels if y == majority) / max(len(dev_labels), 1), 4)
