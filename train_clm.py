"""Train or fine-tune a causal language model (GPT) with PaddlePaddle.

    python train_clm.py                                 # built-in sample corpus, tiny GPT, CPU-friendly
    python train_clm.py --train_file=corpus.txt --block_size=256
    python train_clm.py --train_file=a.tsv --text_column=1 --dev_file=b.tsv

Texts are joined (each ended by the end-of-text token) and cut into block_size blocks; the
labels are the inputs, shifted by one inside the loss. Perplexity is exp of the dev loss.
Generate with `tools/generate_text.py MODEL_DIR "prompt" --strategy greedy|top_k|top_p`.
Every key below can be overridden; `python train_clm.py --help` lists them.

Imports: the engine facade (train_utils) and the package's modules it names; paddle and paddlenlp inside
the functions (so `--help` answers without loading them).
"""

import functools
import os

import train_utils as tu
from paddle_finetune.configuration import (check_model_config, check_rules, numeric_rule, one_of, positive,
                                           resolve_greater_is_better, training_rules)
from paddle_finetune.data.splits import load_text_splits
from paddle_finetune.evaluation.perplexity import loss_and_perplexity
from paddle_finetune.evaluation.sharding import in_order_units
from paddle_finetune.reporting.console import log
from paddle_finetune.reporting.files import write_json_atomic
from paddle_finetune.runtime.distributed import is_main_process
from paddle_finetune.tasks.causal_lm import build_blocks, clm_loss, collate, end_of_text_id, generate_text, row_losses

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/clm",  # checkpoints, logs and the sample generation; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of paddle_finetune/speedups (compiled CPU kernels, MKL, malloc, beam search); False = paddle's own code
    recompute=False,  # activation checkpointing: each transformer block's activations recomputed in the backward (less memory, ~1/3 more compute)
    # --- model ---
    pretrained_model="",  # paddlenlp name, local Paddle dir or local HF dir; "" builds a GPT from model_config
    model_config=dict(  # used when pretrained_model is "": a small GPT trained from scratch; a partial dict updates these
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
    train_file="",  # .txt (one text a line) or .json/.jsonl/.tsv/.csv; "" with no dataset_name: the built-in sample in datasets/sample_lm/
    dev_file="",  # evaluated every eval_steps; "" with no train_file or dataset_name: the built-in sample's dev.txt
    test_file="",  # scored once after training, with the final model; "" = none
    dev_size=0,  # with no dev_file: hold out this many shuffled train texts as dev
    text_column=None,  # name or 0-based index for JSON/TSV/CSV (None = "text"); .txt files are one text per line
    has_header="auto",  # CSV/TSV files: "auto" (a first row of known column names, or a word above numbers, is a header; logged), True or False
    block_size=64,  # tokens per training example; >= 2 (one token predicts the next)
    max_train_samples=0,  # texts; 0 = all
    max_eval_samples=0,  # texts; 0 = all
    skip_bad_rows=False,  # skip (and count) bad rows instead of stopping at the first
    # --- training ---
    train_batch_size=32,  # per device
    eval_batch_size=64,  # blocks per forward pass on dev/test; with several ranks, whole batches are dealt across them
    gradient_accumulation_steps=1,  # micro-batches per optimizer step (global batch = train_batch_size x devices x this)
    num_train_epochs=3,  # used when max_steps <= 0; must then be >= 1
    max_steps=-1,  # > 0 overrides num_train_epochs
    learning_rate=2e-3,  # peak, after warmup; decays linearly to 0
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
    save_steps=60,  # a checkpoint every this many steps, and at the end
    save_total_limit=2,  # checkpoints kept (0 = all); the best (by metric_for_best) and the newest are always kept
    metric_for_best="perplexity",  # "perplexity" or "loss" on dev: picks the best checkpoint
    greater_is_better=None,  # None: inferred (perplexity and loss are lower-is-better)
    load_best_model_at_end=True,  # after training, load the best checkpoint's weights for the test split and the final export; False keeps the last
    early_stopping_patience=0,  # stop after this many evaluations without improvement; 0 = off
    early_stopping_threshold=0.0,  # minimum improvement of metric_for_best that counts
    sample_prompt="探险家",  # continued greedily after training, for the log; "" = skip
    sample_max_new_tokens=30,  # tokens generated after sample_prompt
    report_to="wandb",  # "wandb", "visualdl", both ("wandb,visualdl" or a list) or "none"; wandb runs offline without credentials
    wandb_project="paddle-finetune",
    wandb_run_name="",  # "" = wandb picks one
)

SAMPLE_FILES = {"train": os.path.join("sample_lm", "train.txt"), "dev": os.path.join("sample_lm", "dev.txt")}


def validate_config(cfg):
    """Every check that needs no data and no model weights."""
    check_rules(cfg, {
        **training_rules(cfg),
        "block_size": (numeric_rule(lambda v: v >= 2, "must be >= 2 (one token predicts the next)"),),
        "sample_max_new_tokens": (positive,),
        "metric_for_best": (one_of("perplexity", "loss"),),
    })
    resolve_greater_is_better(cfg["metric_for_best"], cfg["greater_is_better"])
    if not cfg["pretrained_model"]:  # built from model_config (max_position_embeddings is raised to block_size)
        from paddlenlp.transformers import GPTConfig

        check_model_config(cfg["model_config"], GPTConfig, [("hidden_size", "num_attention_heads")])

# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def build_model(cfg, tokenizer):
    from paddlenlp.transformers import AutoModelForCausalLM, GPTForCausalLM

    if cfg["pretrained_model"]:
        return tu.load_model(AutoModelForCausalLM, cfg, fit_lengths=("block_size",))
    eot = end_of_text_id(tokenizer)
    return tu.load_model(
        GPTForCausalLM, cfg, vocab_size=tu.vocab_size(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=eot, eos_token_id=eot,
        max_position_embeddings=max(cfg["model_config"].get("max_position_embeddings", 512), cfg["block_size"]),
    )


def main(cfg):

    validate_config(cfg)
    device = tu.start_run(cfg)
    out = cfg["output_dir"]
    texts = load_text_splits(cfg, SAMPLE_FILES, log)
    tokenizer, staged = tu.load_tokenizer(cfg, texts.get("train", []))
    model = build_model(cfg, tokenizer)
    features = {split: build_blocks(rows, tokenizer, cfg["block_size"]) for split, rows in texts.items()}
    sizes = ", ".join(f"{split} {len(texts[split])} texts -> {len(f)} blocks of {cfg['block_size']}" for split, f in features.items())
    log(f"data: {sizes}; device {device}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eval_units = {split: in_order_units(len(features[split]), cfg["eval_batch_size"])
                  for split in ("dev", "test") if features.get(split)}

    def predict_fn(model_, split, unit, rows):
        pad_to = max(len(features[split][i]["input_ids"]) for i in unit)
        return row_losses(model_, [features[split][i] for i in rows], pad_id, pad_to)

    def score_fn(split, outputs, step):
        return tu.Scored(loss_and_perplexity([row for unit in outputs for row in unit]))

    task = tu.TrainingTask(
        config=cfg,
        model=model,
        tokenizer=tokenizer,
        train_features=features.get("train", []),
        train_lengths=[len(f["input_ids"]) for f in features.get("train", [])],
        collate_fn=functools.partial(collate, pad_id=pad_id),
        loss_fn=clm_loss,
        eval_units=eval_units,
        eval_data={split: features[split] for split in eval_units},
        predict_fn=predict_fn,
        score_fn=score_fn,
        metric_for_best="perplexity",
        staged_files=staged,
        group_by_length=False,  # blocks are all block_size long
        evaluate_at_start="dev" in eval_units,
    )
    state = tu.run_training(task)

    if cfg["sample_prompt"] and is_main_process():
        sample = generate_text(model, tokenizer, cfg["sample_prompt"], "greedy", cfg["sample_max_new_tokens"])
        write_json_atomic(os.path.join(out, "sample_generation.json"), {"prompt": cfg["sample_prompt"], "greedy": sample})
        log(f"sample (greedy): {cfg['sample_prompt']} -> {sample}")
    return state


def run(config=None, **overrides):
    """Run from Python (a notebook cell): `run(max_steps=50)`, `run("configs/x.py", learning_rate=3e-4)` or
    `run({...})`. The same checks and outputs as `python train_clm.py`; returns the results (all_results.json's
    content). Bad input raises the typed error (paddle_finetune.errors) with the message the command prints."""
    return tu.run_in_process(main, CONFIG, "train_clm.py", config, overrides)


def cli(argv=None):
    """`python train_clm.py --key=value ...`: exits 0, 2 with one `error:` line, or 128+N after signal N."""
    tu.run_main(main, CONFIG, prog="train_clm.py", doc=__doc__, argv=argv)


if __name__ == "__main__":
    cli()
