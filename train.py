"""Fine-tune BART for summarization with PaddlePaddle.

    python train.py                                  # built-in sample, tiny BART, CPU-friendly
    python train.py --config configs/lcsts_new.py    # a preset
    python train.py --learning_rate=3e-4 --max_steps=500
    python -m paddle.distributed.launch --nproc_per_node 2 train.py ...

Every key below can be overridden; `python train.py --help` lists them.

Imports: the engine (train_utils) and the project's modules it names; paddle and paddlenlp inside the
functions (so `--help` answers without loading them).
"""
import functools
import json
import os

import numpy as np

import speedups
import train_utils as tu
from checkpoints import unwrap_model
from configuration import (ConfigError, at_least, check_max_lengths, check_model_config, check_rules, non_negative, one_of,
                           positive, resolve_greater_is_better, training_rules)
from reporting import log, progress_bar
from data_utils import SUMMARIZATION_NAME_MAPPING, DataError, dataset_columns, decode_tokens, load_splits, read_examples

ROOT = os.path.dirname(os.path.abspath(__file__))

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/summarization",  # checkpoints, logs and predictions; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of speedups.py (CPU kernels, MKL, malloc, beam search); False = paddle's own code
    # --- model ---
    pretrained_model="",  # paddlenlp name, local Paddle dir or local HF dir; "" builds from model_config
    model_config=dict(  # used when pretrained_model is "": a small BART trained from scratch; a partial dict updates these
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        max_position_embeddings=256,
        dropout=0.1,
        attention_dropout=0.0,
        activation_dropout=0.0,
    ),
    converted_model_dir="",  # where a local HF checkpoint is converted to; "" = next to it, suffixed -paddle
    # --- data ---
    dataset_name="",  # a paddlenlp or Hugging Face dataset name ("lcsts_new"), or a local folder datasets.load_dataset reads; "" = the files below
    dataset_config_name="",  # the dataset's configuration (subset) name, for names that have several; "" = its default
    train_file="",  # .json/.jsonl/.tsv/.csv; "" with no dataset_name: the built-in sample in datasets/sample_summarization/
    dev_file="",  # evaluated every eval_steps; "" with no train_file or dataset_name: the built-in sample's dev.jsonl
    test_file="",  # evaluated once after training; "" = none
    dev_size=0,  # with no dev_file: hold out this many shuffled train rows as dev
    text_column=None,  # name or 0-based index; None: from dataset_name, or detected (source/content/text/...)
    summary_column=None,  # name or 0-based index; None: from dataset_name, or detected (target/title/summary/...)
    max_source_length=192,  # source tokens kept, special tokens included; at most the model's max_position_embeddings
    max_target_length=32,  # summary tokens kept (eos included) and generated; at most max_position_embeddings
    min_target_length=0,  # generated summaries are at least this many tokens (min_length of generate)
    max_train_samples=0,  # 0 = all
    max_eval_samples=0,  # 0 = all
    ignore_pad_token_for_loss=True,  # labels padded with -100, so padding never counts in the loss
    skip_bad_rows=False,  # skip (and count) bad rows instead of stopping at the first
    pad_to_max_length=False,  # pad every batch to max_*_length (the slow way; for benchmarks)
    group_by_length=True,  # batches of similar lengths, so dynamic padding pads little
    # --- training ---
    train_batch_size=32,  # per device
    eval_batch_size=64,  # rows per generate call on dev/test; with several ranks, whole batches are dealt across them
    gradient_accumulation_steps=1,  # micro-batches per optimizer step (global batch = train_batch_size x devices x this)
    num_train_epochs=6,  # used when max_steps <= 0; must then be >= 1
    max_steps=-1,  # > 0 overrides num_train_epochs
    learning_rate=1e-3,  # peak, after warmup; decays linearly to 0
    warmup_proportion=0.05,  # share of the steps spent warming up, 0..1
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
    save_steps=75,  # a checkpoint every this many steps, and at the end
    save_total_limit=2,  # checkpoints kept (0 = all); the best (by metric_for_best) and the newest are always kept
    metric_for_best="rougeL",  # "rouge1", "rouge2", "rougeL" or "loss" on dev: picks the best checkpoint
    greater_is_better=None,  # None: inferred (perplexity and loss are lower-is-better)
    load_best_model_at_end=True,  # after training, load the best checkpoint's weights for the test split and the final export; False keeps the last
    early_stopping_patience=0,  # stop after this many evaluations without improvement; 0 = off
    early_stopping_threshold=0.0,  # minimum improvement of metric_for_best that counts
    num_beams=1,  # 1 = greedy
    num_eval_samples_logged=8,  # rows in the wandb table of sample predictions
    report_to="wandb",  # "wandb", "visualdl", both ("wandb,visualdl" or a list) or "none"; wandb runs offline without credentials
    wandb_project="paddle-finetune",
    wandb_run_name="",  # "" = wandb picks one
)

# Column pairs recognised when text_column/summary_column are not given.
KNOWN_COLUMN_PAIRS = [("source", "target"), ("content", "title"), ("content", "summary"), ("text", "summary"),
                      ("document", "summary"), ("article", "highlights"), ("abstract", "title")]


BART_HEAD_PAIRS = [("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads")]


def validate_config(cfg):
    """Every check that needs no data and no model weights."""
    check_rules(cfg, {
        **training_rules(cfg),
        "dev_size": (non_negative,),
        "max_source_length": (positive,),
        "max_target_length": (positive,),
        "min_target_length": (non_negative,),
        "num_beams": (at_least(1),),
        "num_eval_samples_logged": (non_negative,),
        "metric_for_best": (one_of("rouge1", "rouge2", "rougeL", "loss"),),
    })
    resolve_greater_is_better(cfg["metric_for_best"], cfg["greater_is_better"])
    if cfg["max_target_length"] < cfg["min_target_length"]:
        raise ConfigError(
            f"max_target_length ({cfg['max_target_length']}) < min_target_length ({cfg['min_target_length']})"
        )
    model = cfg["pretrained_model"]
    if model and tu.looks_like_path(model) and not os.path.isdir(os.path.expanduser(model)):
        raise ConfigError(f"pretrained_model directory not found: {model}")
    if not model:  # built from model_config: its limits are known now (a pretrained model's once it is loaded)
        from paddlenlp.transformers import BartConfig

        fields = check_model_config(cfg["model_config"], BartConfig, BART_HEAD_PAIRS)
        check_max_lengths({k: cfg[k] for k in ("max_source_length", "max_target_length")},
                          fields["max_position_embeddings"], "model_config")


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------
def detect_columns(path):
    """Pick a known (text, summary) column pair from the first row of a file with named columns."""
    from data_utils import iter_rows

    for line_no, row in iter_rows(path, has_header=True):
        if isinstance(row, dict):
            for text_col, summary_col in KNOWN_COLUMN_PAIRS:
                if text_col in row and summary_col in row:
                    return text_col, summary_col
            raise DataError(
                f"{path}:{line_no}: cannot tell the text and summary columns apart among {sorted(row)}; "
                "set text_column and summary_column"
            )
        break
    raise DataError(f"{path}: set text_column and summary_column (by 0-based index for files without a header)")


def resolve_columns(cfg, path):
    text_col, summary_col = cfg["text_column"], cfg["summary_column"]
    if text_col is None or summary_col is None:
        mapped = SUMMARIZATION_NAME_MAPPING.get(cfg["dataset_name"]) or detect_columns(path)
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
    """Dynamic padding to the longest item (or to pad_to=(src, tgt) lengths for pad-to-max)."""
    src_len = pad_to[0] if pad_to else max(len(f["input_ids"]) for f in features)
    tgt_len = pad_to[1] if pad_to else max(len(f["labels"]) for f in features)
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
    return {"input_ids": input_ids, "attention_mask": attention_mask, "decoder_input_ids": decoder_input_ids,
            "labels": labels, "num_tokens": real_tokens}


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


def generate_batch(model, features, cfg, ids):
    """Generated token ids of one batch (a numpy row per feature), padded to the batch's longest source."""
    import paddle

    batch = collate(features, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"])
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
    from evaluation import length_sorted_units

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


def predict_unit(model, tokenizer, features, cfg, ids, with_loss):
    """One evaluation batch: the generated summaries and their token counts, and (with references) the
    teacher-forced loss summed over the batch's real target tokens."""
    from batching import to_tensors

    rows = generate_batch(model, features, cfg, ids)
    out = {"predictions": [decode_ids(tokenizer, row, ids["eos"], ids["pad"]) for row in rows],
           "gen_tokens": [generated_length(row, ids["eos"], ids["pad"]) for row in rows]}
    if with_loss:
        batch = collate(features, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"])
        tokens = int((batch["labels"] != -100).sum())
        batch.pop("num_tokens")
        out["loss"] = [float(seq2seq_loss(model, to_tensors(batch))) * tokens, tokens]
    return out


def score_split(examples, units, outputs, out_path):
    """ROUGE (when every row has a reference), loss, gen_len (tokens) and gen_chars; writes the predictions
    file (atomically). Returns (metrics, predictions in row order)."""
    from metrics import rouge_scores

    predictions, gen_tokens = [None] * len(examples), [0] * len(examples)
    loss_sum = loss_tokens = 0
    for unit, out in zip(units, outputs):
        for i, text, n in zip(unit, out["predictions"], out["gen_tokens"]):
            predictions[i], gen_tokens[i] = text, n
        if "loss" in out:
            loss_sum, loss_tokens = loss_sum + out["loss"][0], loss_tokens + out["loss"][1]
    references = [ex["target"] for ex in examples]
    metrics = rouge_scores(predictions, references) if all(references) else {}
    if loss_tokens:
        metrics["loss"] = loss_sum / loss_tokens
    metrics["gen_len"] = float(np.mean(gen_tokens)) if predictions else 0.0
    metrics["gen_chars"] = float(np.mean([len(p) for p in predictions])) if predictions else 0.0
    tmp = out_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for ex, pred in zip(examples, predictions):
            f.write(json.dumps({"source": ex["source"], "reference": ex["target"], "prediction": pred}, ensure_ascii=False) + "\n")
    os.replace(tmp, out_path)
    return metrics, predictions


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def main(cfg):
    validate_config(cfg)
    from paddlenlp.transformers import BartForConditionalGeneration

    from evaluation import length_sorted_units

    device = tu.start_run(cfg)
    data = load_data(cfg)
    tokenizer, staged = tu.load_tokenizer(cfg, (t for ex in data.get("train", []) for t in (ex["source"], ex["target"])))
    model_kwargs = {}
    if not cfg["pretrained_model"]:
        model_kwargs = dict(
            vocab_size=tu.vocab_size(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.cls_token_id,
            eos_token_id=tokenizer.sep_token_id,
            decoder_start_token_id=tokenizer.cls_token_id,
            forced_eos_token_id=tokenizer.sep_token_id,
        )
    model = tu.load_model(BartForConditionalGeneration, cfg, fit_lengths=("max_source_length", "max_target_length"), **model_kwargs)
    ids = special_ids(tokenizer, model)
    record_generation_settings(model, cfg, ids)
    log(f"tokens: pad={ids['pad']} eos={ids['eos']} decoder_start={ids['decoder_start']} (device {device})")

    features = {split: tokenize_examples(rows, tokenizer, cfg, ids["eos"]) for split, rows in data.items()}
    pad_to = (cfg["max_source_length"], cfg["max_target_length"]) if cfg["pad_to_max_length"] else None
    collate_fn = functools.partial(
        collate, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"], ignore_pad=cfg["ignore_pad_token_for_loss"], pad_to=pad_to
    )
    eval_units = {split: length_sorted_units([len(f["input_ids"]) for f in features[split]], cfg["eval_batch_size"])
                  for split in ("dev", "test") if split in data}
    samples = {}

    def predict_fn(model_, split, unit):
        with_loss = all(data[split][i]["target"] for i in unit)
        return predict_unit(model_, tokenizer, [features[split][i] for i in unit], cfg, ids, with_loss)

    def score_fn(split, outputs, step):
        metrics, predictions = score_split(data[split], eval_units[split], outputs,
                                           os.path.join(cfg["output_dir"], f"predictions_{split}.jsonl"))
        if split == "dev":
            samples["rows"] = [
                {"source": ex["source"][:200], "reference": ex["target"], "prediction": p}
                for ex, p in list(zip(data["dev"], predictions))[: cfg["num_eval_samples_logged"]]
            ]
        return metrics

    task = tu.TrainingTask(
        config=cfg,
        model=model,
        tokenizer=tokenizer,
        train_features=features.get("train", []),
        train_lengths=[len(f["input_ids"]) + len(f["labels"]) for f in features.get("train", [])],
        collate_fn=collate_fn,
        loss_fn=seq2seq_loss,
        eval_units=eval_units,
        eval_data={split: features[split] for split in eval_units},
        predict_fn=predict_fn,
        score_fn=score_fn,
        metric_for_best="rougeL",
        staged_files=staged,
        sample_rows_fn=lambda: samples.get("rows"),
        group_by_length=cfg["group_by_length"] and not cfg["pad_to_max_length"],
    )
    state = tu.run_training(task)
    return state


if __name__ == "__main__":
    tu.run_main(main, CONFIG, prog="train.py", doc=__doc__)
