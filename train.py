"""Fine-tune BART for summarization with PaddlePaddle.

    python train.py                                  # built-in sample, tiny BART, CPU-friendly
    python train.py --config configs/lcsts_new.yaml  # a preset (.yaml, .py or .json)
    python train.py --learning_rate=3e-4 --max_steps=500
    python -m paddle.distributed.launch --nproc_per_node 2 train.py ...

Every key below can be overridden; `python train.py --help` lists them.

Imports: the engine facade (train_utils) and the package's modules it names; paddle and paddlenlp inside
the functions (so `--help` answers without loading them).
"""

import functools
import os

import train_utils as tu
from paddle_finetune.configuration import (ConfigError, at_least, check_max_lengths, check_model_config, check_rules,
                                           non_negative, one_of, positive, resolve_greater_is_better, training_rules)
from paddle_finetune.evaluation.rouge import ROUGE_STYLES
from paddle_finetune.evaluation.sharding import length_sorted_units
from paddle_finetune.reporting.console import log
from paddle_finetune.tasks.summarization import (collate, load_data, predict_rows, record_generation_settings, score_split,
                                                 seq2seq_loss, special_ids, tokenize_examples, unit_lengths)

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/summarization",  # checkpoints, logs and predictions; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of paddle_finetune/speedups (compiled CPU kernels, MKL, malloc, beam search); False = paddle's own code
    recompute=False,  # activation checkpointing: each transformer block's activations recomputed in the backward (less memory, ~1/3 more compute)
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
    has_header="auto",  # CSV/TSV files: "auto" (a first row of known column names, or a word above numbers, is a header; logged), True or False
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
    rouge_style="chars",  # ROUGE convention: "chars" (PaddleNLP/CPT, the published LCSTS numbers), "words" (jieba words + rouge-chinese, LLaMA-Factory), "cjk_tokens" (this project's earlier scores: CJK chars and Latin words, punctuation dropped)
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
        "rouge_style": (one_of(*ROUGE_STYLES),),
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
# main
# ----------------------------------------------------------------------------
def main(cfg):
    validate_config(cfg)
    from paddlenlp.transformers import BartForConditionalGeneration

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

    def predict_fn(model_, split, unit, rows):
        pad_to = unit_lengths([features[split][i] for i in unit])
        return predict_rows(model_, tokenizer, [features[split][i] for i in rows], cfg, ids, pad_to,
                            with_loss=[bool(data[split][i]["target"]) for i in rows])

    def score_fn(split, outputs, step):
        metrics, predictions = score_split(data[split], eval_units[split], outputs,
                                           os.path.join(cfg["output_dir"], f"predictions_{split}.jsonl"), cfg["rouge_style"])
        rows = [{"source": ex["source"][:200], "reference": ex["target"], "prediction": p}
                for ex, p in list(zip(data[split], predictions))[: cfg["num_eval_samples_logged"]]] if split == "dev" else []
        return tu.Scored(metrics, rows)

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
        group_by_length=cfg["group_by_length"] and not cfg["pad_to_max_length"],
    )
    state = tu.run_training(task)
    return state


def run(config=None, **overrides):
    """Run from Python (a notebook cell): `run(max_steps=50)`, `run("configs/x.py", learning_rate=3e-4)` or
    `run({...})`. The same checks and outputs as `python train.py`; returns the results (all_results.json's
    content). Bad input raises the typed error (paddle_finetune.errors) with the message the command prints."""
    return tu.run_in_process(main, CONFIG, "train.py", config, overrides)


def cli(argv=None):
    """`python train.py --key=value ...`: exits 0, 2 with one `error:` line, or 128+N after signal N."""
    tu.run_main(main, CONFIG, prog="train.py", doc=__doc__, argv=argv)


if __name__ == "__main__":
    cli()
