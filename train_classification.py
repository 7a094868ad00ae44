"""Fine-tune BERT / ERNIE / RoBERTa for text (or text-pair) classification with PaddlePaddle.

    python train_classification.py                     # built-in sample, tiny BERT, CPU-friendly
    python train_classification.py --train_file=a.tsv --dev_file=b.tsv --text_column=1 --label_column=2
    python train_classification.py --pretrained_model=ernie-3.0-medium-zh --learning_rate=5e-5

Label names are read from the training data; the label <-> id map is saved with every
checkpoint (label_map.json and the model config) and used by tools/predict_classification.py.
Every key below can be overridden; `python train_classification.py --help` lists them.

Imports: the engine facade (train_utils) and the package's modules it names; paddle and paddlenlp inside
the functions (so `--help` answers without loading them).
"""

import functools
import math
import os

import numpy as np

import train_utils as tu
from paddle_finetune.configuration import (check_max_lengths, check_model_config, check_rules, non_negative, one_of,
                                           positive, resolve_greater_is_better, training_rules)
from paddle_finetune.evaluation.classification import classification_report
from paddle_finetune.evaluation.sharding import length_sorted_units
from paddle_finetune.reporting.console import log
from paddle_finetune.tasks.classification import (LABEL_MAP_FILE, check_labels, classification_loss, collate, eval_rows,
                                                  describe_labels, label_names_from, label_names_of, load_data, majority_accuracy,
                                                  tokenize_rows, write_predictions, write_reports)

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/classification",  # checkpoints, logs and reports; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of paddle_finetune/speedups (compiled CPU kernels, MKL, malloc, beam search); False = paddle's own code
    recompute=False,  # activation checkpointing: each transformer block's activations recomputed in the backward (less memory, ~1/3 more compute)
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
    text_column=None,  # name or 0-based index (TSV/CSV, with or without a header); None = "text"
    text_pair_column=None,  # second text of a pair (name or index); None = single texts
    label_column=None,  # name or index; None = "label". Label names are read from the data
    has_header="auto",  # CSV/TSV files: "auto" (a first row of known column names, or a word above numbers, is a header; logged), True or False
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
    log(describe_labels(data["train"], label_names) if "train" in data
        else f"labels ({len(label_names)}) of the model: {', '.join(label_names[:20])}{' ...' if len(label_names) > 20 else ''}")
    pad_id = tokenizer.pad_token_id
    log(f"device {device}, pad={pad_id}")
    features = {split: tokenize_rows(rows, tokenizer, cfg["max_seq_length"], label2id) for split, rows in data.items()}
    eval_units = {split: length_sorted_units([len(f["input_ids"]) for f in features[split]], cfg["eval_batch_size"])
                  for split in ("dev", "test") if split in data}

    baseline = None
    if "dev" in data and "train" in data:
        baseline = majority_accuracy([r["label"] for r in data["train"]], [r["label"] for r in data["dev"]])
        log(f"majority-class baseline on dev: accuracy {baseline}")

    def predict_fn(model_, split, unit, rows):
        pad_to = max(len(features[split][i]["input_ids"]) for i in unit)
        return eval_rows(model_, [features[split][i] for i in rows], pad_id, pad_to)

    def score_fn(split, outputs, step):
        probs, losses = [None] * len(features[split]), []
        for unit, unit_outputs in zip(eval_units[split], outputs):
            for i, out in zip(unit, unit_outputs):
                probs[i] = out["probs"]
                losses.append(out["loss"])
        preds = [int(np.argmax(p)) for p in probs]
        report = classification_report([f["label"] for f in features[split]], preds, label_names)
        write_reports(report, label_names, cfg["output_dir"], step, split)
        write_predictions(os.path.join(cfg["output_dir"], f"predictions_{split}.jsonl"), data[split], probs, label_names)
        rows = [{"text": r["text"][:200], "label": r["label"], "prediction": label_names[p], "probability": round(float(probs[i][p]), 4)}
                for i, (r, p) in enumerate(list(zip(data[split], preds))[: cfg["num_eval_samples_logged"]])] if split == "dev" else []
        return tu.Scored({"accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                          "loss": math.fsum(losses) / max(len(losses), 1)}, rows)

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
        group_by_length=cfg["group_by_length"],
    )
    return tu.run_training(task)


def run(config=None, **overrides):
    """Run from Python (a notebook cell): `run(max_steps=50)`, `run("configs/x.py", learning_rate=3e-4)` or
    `run({...})`. The same checks and outputs as `python train_classification.py`; returns the results (all_results.json's
    content). Bad input raises the typed error (paddle_finetune.errors) with the message the command prints."""
    return tu.run_in_process(main, CONFIG, "train_classification.py", config, overrides)


def cli(argv=None):
    """`python train_classification.py --key=value ...`: exits 0, 2 with one `error:` line, or 128+N after signal N."""
    tu.run_main(main, CONFIG, prog="train_classification.py", doc=__doc__, argv=argv)


if __name__ == "__main__":
    cli()
