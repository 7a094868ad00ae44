"""Fine-tune BERT / ERNIE / RoBERTa for text (or text-pair) classification with PaddlePaddle.

    python train_classification.py                     # built-in sample, tiny BERT, CPU-friendly
    python train_classification.py --train_file=a.tsv --dev_file=b.tsv --text_column=1 --label_column=2
    python train_classification.py --pretrained_model=ernie-3.0-medium-zh --learning_rate=5e-5

Label names are read from the training data; the label <-> id map is saved with every
checkpoint (label_map.json and the model config) and used by tools/predict_classification.py.
Every key below can be overridden; `python train_classification.py --help` lists them.

Imports: the engine (train_utils) and the project's modules it names; paddle and paddlenlp inside the
functions (so `--help` answers without loading them).
"""
import functools
import json
import os

import numpy as np

import train_utils as tu
from batching import to_tensors
from checkpoints import unwrap_model
from configuration import (check_max_lengths, check_model_config, check_rules, non_negative, one_of, positive,
                           resolve_greater_is_better, training_rules)
from reporting import log, progress_bar, write_json_atomic
from data_utils import DataError, dataset_columns, load_splits, read_examples
from metrics import classification_report

LABEL_MAP_FILE = "label_map.json"

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/classification",  # checkpoints, logs and reports; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of speedups.py (CPU kernels, MKL, malloc, beam search); False = paddle's own code
    # --- model ---
    pretrained_model="",  # paddlenlp name, local Paddle dir or local HF dir (BERT/ERNIE/RoBERTa); "" builds from model_config
    model_config=dict(  # used when pretrained_model is "": a small BERT trained from scratch; a partial dict updates these
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=512,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    ),
    converted_model_dir="",  # where a local HF checkpoint is converted to; "" = next to it, suffixed -paddle
    # --- data ---
    dataset_name="",  # a paddlenlp or Hugging Face dataset name, or a local folder datasets.load_dataset reads; "" = the files below
    dataset_config_name="",  # the dataset's configuration (subset) name, for names that have several; "" = its default
    train_file="",  # .tsv/.csv/.json/.jsonl; "" with no dataset_name: the built-in sample in datasets/sample_classification/
    dev_file="",  # evaluated every eval_steps; "" with no train_file or dataset_name: the built-in sample's dev.tsv
    test_file="",  # scored once after training, with the final model; "" = none
    dev_size=0,  # with no dev_file: hold out this many shuffled train rows as dev
    text_column=None,  # name or 0-based index (headerless TSV/CSV); None = "text"
    text_pair_column=None,  # second text of a pair (name or index); None = single texts
    label_column=None,  # name or index; None = "label". Label names are read from the data
    max_seq_length=128,  # tokens per example (pair included), special tokens included; at most max_position_embeddings
    max_train_samples=0,  # 0 = all
    max_eval_samples=0,  # 0 = all
    skip_bad_rows=False,  # skip (and count) bad rows instead of stopping at the first
    group_by_length=True,  # batches of similar lengths, so dynamic padding pads little
    # --- training ---
    train_batch_size=32,  # per device
    eval_batch_size=64,  # rows per forward pass on dev/test; with several ranks, whole batches are dealt across them
    gradient_accumulation_steps=1,  # micro-batches per optimizer step (global batch = train_batch_size x devices x this)
    num_train_epochs=6,  # used when max_steps <= 0; must then be >= 1
    max_steps=-1,  # > 0 overrides num_train_epochs
    learning_rate=1e-3,  # peak, after warmup; decays linearly to 0
    warmup_proportion=0.1,  # share of the steps spent warming up, 0..1
    warmup_steps=0,  # > 0 wins over warmup_proportion
    adam_epsilon=1e-8,
    weight_decay=0.01,  # AdamW decay; never on biases and norm weights
    max_grad_norm=1.0,  # global-norm clipping; 0 = off
    use_amp=False,  # GPU only; ignored with a warning on CPU
    amp_dtype="float16",  # "float16" (with loss scaling) or "bfloat16"
    scale_loss=2.0**15,  # initial GradScaler loss scale for float16 AMP
    # --- evaluation, logging, checkpoints ---
    logging_steps=10,  # a train_log.jsonl line (and a wandb point) every this many steps
    eval_steps=0,  # 0 = same as save_steps
    save_steps=40,  # a checkpoint every this many steps, and at the end
    save_total_limit=2,  # checkpoints kept (0 = all); the best (by metric_for_best) and the newest are always kept
    metric_for_best="accuracy",  # "accuracy", "macro_f1" or "loss" on dev: picks the best checkpoint
    greater_is_better=None,  # None: inferred (perplexity and loss are lower-is-better)
    load_best_model_at_end=True,  # after training, load the best checkpoint's weights for the test split and the final export; False keeps the last
    early_stopping_patience=0,  # stop after this many evaluations without improvement; 0 = off
    early_stopping_threshold=0.0,  # minimum improvement of metric_for_best that counts
    num_eval_samples_logged=8,  # rows in the wandb table of sample predictions
    report_to="wandb",  # "wandb", "visualdl", both ("wandb,visualdl" or a list) or "none"; wandb runs offline without credentials
    wandb_project="paddle-finetune",
    wandb_run_name="",  # "" = wandb picks one
)



def validate_config(cfg):
    """Every check that needs no data and no model weights."""
    check_rules(cfg, {
        **training_rules(cfg),
        "max_seq_length": (positive,),
        "num_eval_samples_logged": (non_negative,),
        "metric_for_best": (one_of("accuracy", "macro_f1", "loss"),),
    })
    resolve_greater_is_better(cfg["metric_for_best"], cfg["greater_is_better"])
    if not cfg["pretrained_model"]:  # built from model_config: its limits are known now (a pretrained model's once it is loaded)
        from paddlenlp.transformers import BertConfig

        fields = check_model_config(cfg["model_config"], BertConfig, [("hidden_size", "num_attention_heads")])
        check_max_lengths({"max_seq_length": cfg["max_seq_length"]}, fields["max_position_embeddings"], "model_config")


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def default_if_none(value, default):
    return default if value is None else value


def label_names_from(rows):
    """Sorted label names; all-numeric labels sort as numbers so "10" follows "9"."""
    names = {r["label"] for r in rows}
    numeric = all(n.lstrip("-").isdigit() for n in names)
    return sorted(names, key=(lambda n: int(n)) if numeric else None)


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
    """{split: rows}, every row checked before training starts (see data_utils.load_splits)."""
    return load_splits(cfg, lambda split, path: read_examples(path, split_columns(cfg), skip_bad_rows=cfg["skip_bad_rows"], log=log),
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


def collate(features, rng=None, pad_id=0):
    """Dynamic padding to the longest item in the batch."""
    length = max(len(f["input_ids"]) for f in features)
    n = len(features)
    input_ids = np.full((n, length), pad_id, dtype="int64")
    token_type_ids = np.zeros((n, length), dtype="int64")
    attention_mask = np.zeros((n, length), dtype="float32")
    for i, f in enumerate(features):
        input_ids[i, : len(f["input_ids"])] = f["input_ids"]
        token_type_ids[i, : len(f["token_type_ids"])] = f["token_type_ids"]
        attention_mask[i, : len(f["input_ids"])] = 1
    batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
             "num_tokens": int(attention_mask.sum())}
    if "label" in features[0]:
        batch["labels"] = np.array([f["label"] for f in features], dtype="int64")
    return batch


def forward_logits(model, batch):
    out = model(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"], return_dict=True)
    return out.logits if hasattr(out, "logits") else out[0]


def classification_loss(model, batch):
    import paddle.nn.functional as F

    return F.cross_entropy(forward_logits(model, batch).astype("float32"), batch["labels"].unsqueeze(-1)).mean()


def predict_batch(model, features, pad_id):
    """Softmax probabilities of one batch, [len(features), num_labels]."""
    import paddle
    import paddle.nn.functional as F

    batch = collate([{k: v for k, v in f.items() if k != "label"} for f in features], pad_id=pad_id)
    batch.pop("num_tokens")
    with paddle.no_grad():
        logits = forward_logits(model, to_tensors(batch))
    return F.softmax(logits.astype("float32"), axis=-1).numpy()


def predict_probabilities(model, features, batch_size, pad_id, desc="predict"):
    """Softmax probabilities [n, num_labels], in input order, in the batches evaluation cuts (by length)."""
    from evaluation import length_sorted_units

    probs = [None] * len(features)
    bar = progress_bar(len(features), desc)
    for unit in length_sorted_units([len(f["input_ids"]) for f in features], batch_size):
        for i, row in zip(unit, predict_batch(model, [features[i] for i in unit], pad_id)):
            probs[i] = row
        bar.update(len(unit))
    bar.close()
    return np.stack(probs) if probs else np.zeros((0, 0))


def eval_loss(model, features, pad_id):
    """[summed cross-entropy, rows] of one labelled batch."""
    batch = collate(features, pad_id=pad_id)
    batch.pop("num_tokens")
    return [float(classification_loss(model, to_tensors(batch))) * len(features), len(features)]


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
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(path + ".tmp", path)


def write_predictions(path, rows, probs, label_names):
    """One JSON line per row: its text(s), gold label when known, predicted label and probability."""
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


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def build_model(cfg, tokenizer, label_names):
    from paddlenlp.transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    id2label = {i: name for i, name in enumerate(label_names)}
    label_kwargs = dict(num_labels=len(label_names), id2label=id2label, label2id={n: i for i, n in id2label.items()})
    if cfg["pretrained_model"]:
        return tu.load_model(AutoModelForSequenceClassification, cfg, fit_lengths=("max_seq_length",), **label_kwargs)
    return tu.load_model(BertForSequenceClassification, cfg, vocab_size=tu.vocab_size(tokenizer),
                         pad_token_id=tokenizer.pad_token_id, **label_kwargs)


def main(cfg):
    from evaluation import length_sorted_units

    validate_config(cfg)
    device = tu.start_run(cfg)
    data = load_data(cfg)
    if "train" in data:
        label_names = label_names_from(data["train"])
        tokenizer, staged = tu.load_tokenizer(cfg, [t for r in data["train"] for t in (r["text"], r.get("text_pair", ""))])
        model = build_model(cfg, tokenizer, label_names)
    else:  # do_train=False: the labels are the model's own
        from paddlenlp.transformers import AutoModelForSequenceClassification

        tokenizer, staged = tu.load_tokenizer(cfg, [])
        model = tu.load_model(AutoModelForSequenceClassification, cfg, fit_lengths=("max_seq_length",))
        label_names = label_names_of(model, tu.resolve_pretrained(cfg["pretrained_model"]))
    label2id = {name: i for i, name in enumerate(label_names)}
    for split in ("dev", "test"):
        if split in data:
            check_labels(data[split], label2id, cfg.get(f"{split}_file") or f"the {split} split")
    log(f"labels ({len(label_names)}): {label_names[:20]}{' ...' if len(label_names) > 20 else ''}")
    pad_id = tokenizer.pad_token_id
    log(f"device {device}, pad={pad_id}")
    features = {split: tokenize_rows(rows, tokenizer, cfg["max_seq_length"], label2id) for split, rows in data.items()}
    eval_units = {split: length_sorted_units([len(f["input_ids"]) for f in features[split]], cfg["eval_batch_size"])
                  for split in ("dev", "test") if split in data}

    baseline = None
    if "dev" in data and "train" in data:
        baseline = majority_accuracy([r["label"] for r in data["train"]], [r["label"] for r in data["dev"]])
        log(f"majority-class baseline on dev: accuracy {baseline}")
    samples = {}

    def predict_fn(model_, split, unit):
        feats = [features[split][i] for i in unit]
        return {"probs": predict_batch(model_, feats, pad_id).tolist(), "loss": eval_loss(model_, feats, pad_id)}

    def score_fn(split, outputs, step):
        probs = [None] * len(features[split])
        for unit, out in zip(eval_units[split], outputs):
            for i, p in zip(unit, out["probs"]):
                probs[i] = p
        preds = [int(np.argmax(p)) for p in probs]
        report = classification_report([f["label"] for f in features[split]], preds, label_names)
        write_reports(report, label_names, cfg["output_dir"], step, split)
        write_predictions(os.path.join(cfg["output_dir"], f"predictions_{split}.jsonl"), data[split], probs, label_names)
        if split == "dev":
            samples["rows"] = [
                {"text": r["text"][:200], "label": r["label"], "prediction": label_names[p], "probability": round(float(probs[i][p]), 4)}
                for i, (r, p) in enumerate(list(zip(data["dev"], preds))[: cfg["num_eval_samples_logged"]])
            ]
        loss = sum(out["loss"][0] for out in outputs) / max(sum(out["loss"][1] for out in outputs), 1)
        return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "loss": loss}

    task = tu.TrainingTask(
        config=cfg,
        model=model,
        tokenizer=tokenizer,
        train_features=features.get("train", []),
        train_lengths=[len(f["input_ids"]) for f in features.get("train", [])],
        collate_fn=functools.partial(collate, pad_id=pad_id),
        loss_fn=classification_loss,
        eval_units=eval_units,
        eval_data={split: features[split] for split in eval_units},
        predict_fn=predict_fn,
        score_fn=score_fn,
        metric_for_best="accuracy",
        extra_files={LABEL_MAP_FILE: {"id2label": {str(i): n for i, n in enumerate(label_names)}, "label2id": label2id}},
        staged_files=staged,
        sample_rows_fn=lambda: samples.get("rows"),
        group_by_length=cfg["group_by_length"],
    )
    return tu.run_training(task)


if __name__ == "__main__":
    tu.run_main(main, CONFIG, prog="train_classification.py", doc=__doc__)
