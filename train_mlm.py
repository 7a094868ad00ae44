"""Train or fine-tune a masked language model (BERT / ERNIE / RoBERTa) with PaddlePaddle.

    python train_mlm.py                                 # built-in sample corpus, tiny BERT, CPU-friendly
    python train_mlm.py --train_file=corpus.txt --whole_word_mask=True
    python train_mlm.py --train_file=a.tsv --text_column=1 --line_by_line=False

15% of tokens are chosen afresh for every batch (80% -> [MASK], 10% -> a random token,
10% unchanged); special tokens and padding never are. Evaluation masks the dev set once with
a fixed seed, so perplexity (exp of the loss on masked tokens) is comparable across evaluations.
The starting model is saved to output_dir/initial_model, and the probe sentence is filled in
before and after training (cloze_check.json), so `tools/fill_mask.py` can compare the two.
Every key below can be overridden; `python train_mlm.py --help` lists them.

Imports: the engine facade (train_utils) and the package's modules it names; paddle and paddlenlp inside
the functions (so `--help` answers without loading them).
"""

import functools
import json
import os

import train_utils as tu
from paddle_finetune.checkpoints.storage import save_model_files
from paddle_finetune.configuration import (at_least, check_model_config, check_rules, less_than, one_of, positive,
                                           resolve_greater_is_better, training_rules)
from paddle_finetune.data.splits import load_text_splits
from paddle_finetune.evaluation.perplexity import loss_and_perplexity
from paddle_finetune.evaluation.sharding import in_order_units
from paddle_finetune.reporting.console import log
from paddle_finetune.reporting.files import write_json_atomic
from paddle_finetune.runtime.distributed import is_main_process
from paddle_finetune.tasks.masked_lm import (CLOZE_FILE, INITIAL_MODEL_DIR, answer_in_top_k, build_examples,
                                             cloze_record, collate, fixed_eval_batches, mlm_loss, random_token_ids,
                                             unit_row_losses)

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/mlm",  # checkpoints, logs and the initial model; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of paddle_finetune/speedups (compiled CPU kernels, MKL, malloc, beam search); False = paddle's own code
    recompute=False,  # activation checkpointing: each transformer block's activations recomputed in the backward (less memory, ~1/3 more compute)
    # --- model ---
    pretrained_model="",  # paddlenlp name, local Paddle dir or local HF dir; "" builds from model_config
    model_config=dict(  # used when pretrained_model is "": a small BERT trained from scratch; a partial dict updates these
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,  # the corpus is tiny and training short: dropout only slows learning
        attention_probs_dropout_prob=0.0,
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
    # True: one example per line, False: texts concatenated and cut into block_size blocks.
    # Line by line, the sample's made-up name sits at fixed positions, which a small model from
    # scratch learns in ~900 steps (perplexity 332 -> 3.8); in blocks it was still at 93 after 600.
    line_by_line=True,
    block_size=64,  # tokens per example, [CLS] and [SEP] included; >= 4
    mlm_probability=0.15,  # share of tokens masked in each batch, in (0, 1)
    whole_word_mask=True,  # Chinese whole-word masking: all characters of a jieba word are masked together
    max_train_samples=0,  # texts; 0 = all
    max_eval_samples=0,  # texts; 0 = all
    skip_bad_rows=False,  # skip (and count) bad rows instead of stopping at the first
    group_by_length=True,  # batches of similar lengths (matters for line_by_line)
    # --- training ---
    train_batch_size=32,  # per device
    eval_batch_size=64,  # examples per forward pass on dev/test; with several ranks, whole batches are dealt across them
    gradient_accumulation_steps=1,  # micro-batches per optimizer step (global batch = train_batch_size x devices x this)
    num_train_epochs=10,  # used when max_steps <= 0; must then be >= 1
    max_steps=-1,  # > 0 overrides num_train_epochs
    learning_rate=1.5e-3,  # peak, after warmup; decays linearly to 0
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
    save_steps=100,  # a checkpoint every this many steps, and at the end
    save_total_limit=2,  # checkpoints kept (0 = all); the best (by metric_for_best) and the newest are always kept
    metric_for_best="perplexity",  # "perplexity" or "loss" on dev: picks the best checkpoint
    greater_is_better=None,  # None: inferred (perplexity and loss are lower-is-better)
    load_best_model_at_end=True,  # after training, load the best checkpoint's weights for the test split and the final export; False keeps the last
    early_stopping_patience=0,  # stop after this many evaluations without improvement; 0 = off
    early_stopping_threshold=0.0,  # minimum improvement of metric_for_best that counts
    probe_text="探险家[MASK][MASK]带领队伍抵达了海边。",  # filled in before and after training; "" = skip
    probe_answer="蔺琰",  # what the probe's masks should become after training (for the log); "" = none
    probe_top_k=5,  # candidates kept per mask in cloze_check.json
    report_to="wandb",  # "wandb", "visualdl", both ("wandb,visualdl" or a list) or "none"; wandb runs offline without credentials
    wandb_project="paddle-finetune",
    wandb_run_name="",  # "" = wandb picks one
)

SAMPLE_FILES = {"train": os.path.join("sample_lm", "train.txt"), "dev": os.path.join("sample_lm", "dev.txt")}


def validate_config(cfg):
    """Every check that needs no data and no model weights."""
    check_rules(cfg, {
        **training_rules(cfg),
        "block_size": (at_least(4),),
        "mlm_probability": (positive, less_than(1)),
        "probe_top_k": (positive,),
        "metric_for_best": (one_of("perplexity", "loss"),),
    })
    resolve_greater_is_better(cfg["metric_for_best"], cfg["greater_is_better"])
    if not cfg["pretrained_model"]:  # built from model_config (max_position_embeddings is raised to block_size)
        from paddlenlp.transformers import BertConfig

        check_model_config(cfg["model_config"], BertConfig, [("hidden_size", "num_attention_heads")])

# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------
def build_model(cfg, tokenizer):
    from paddlenlp.transformers import AutoModelForMaskedLM, BertForMaskedLM

    if cfg["pretrained_model"]:
        return tu.load_model(AutoModelForMaskedLM, cfg, fit_lengths=("block_size",))
    return tu.load_model(BertForMaskedLM, cfg, vocab_size=tu.vocab_size(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         max_position_embeddings=max(cfg["model_config"].get("max_position_embeddings", 512), cfg["block_size"]))


def main(cfg):

    validate_config(cfg)
    device = tu.start_run(cfg)
    out = cfg["output_dir"]
    texts = load_text_splits(cfg, SAMPLE_FILES, log)
    tokenizer, staged = tu.load_tokenizer(cfg, texts.get("train", []))
    model = build_model(cfg, tokenizer)
    features = {
        split: build_examples(rows, tokenizer, cfg["block_size"], cfg["line_by_line"], cfg["whole_word_mask"])
        for split, rows in texts.items()
    }
    layout = "line by line" if cfg["line_by_line"] else f"blocks of {cfg['block_size']}"
    sizes = ", ".join(f"{split} {len(texts[split])} texts -> {len(f)} examples" for split, f in features.items())
    log(f"data: {sizes} ({layout}{', whole-word masking' if cfg['whole_word_mask'] else ''}); device {device}")
    collate_fn = functools.partial(collate, pad_id=tokenizer.pad_token_id, mask_id=tokenizer.mask_token_id,
                                   random_ids=random_token_ids(tokenizer), mlm_probability=cfg["mlm_probability"])
    bs = cfg["eval_batch_size"]
    splits = [split for split in ("dev", "test") if features.get(split)]
    masked = {split: fixed_eval_batches(features[split], bs, cfg["seed"], collate_fn, tokenizer.pad_token_id) for split in splits}
    eval_units = {split: in_order_units(len(features[split]), bs) for split in splits}

    def predict_fn(model_, split, unit, rows):
        return unit_row_losses(model_, masked[split][unit[0] // bs], unit, rows)

    def score_fn(split, outputs, step):
        return tu.Scored(loss_and_perplexity([row for unit in outputs for row in unit]))

    cloze_path = os.path.join(out, CLOZE_FILE)

    def before_training(model_):
        # The starting point, kept for before/after comparisons with tools/fill_mask.py.
        save_model_files(model_, tokenizer, os.path.join(out, INITIAL_MODEL_DIR))
        if cfg["probe_text"]:
            before = cloze_record(model_, tokenizer, cfg)
            write_json_atomic(cloze_path, {"probe_text": cfg["probe_text"], "expected": cfg["probe_answer"], "before": before})
            log(f"cloze before training: {cfg['probe_text']} -> {before['filled']} (top: {before['top_k']})")

    task = tu.TrainingTask(
        config=cfg,
        model=model,
        tokenizer=tokenizer,
        train_features=features.get("train", []),
        train_lengths=[len(f["input_ids"]) for f in features.get("train", [])],
        collate_fn=collate_fn,
        loss_fn=mlm_loss,
        eval_units=eval_units,
        eval_data={split: [b.arrays for b in masked[split]] for split in eval_units},  # what is scored: masks included
        predict_fn=predict_fn,
        score_fn=score_fn,
        metric_for_best="perplexity",
        staged_files=staged,
        group_by_length=cfg["group_by_length"],
        evaluate_at_start="dev" in eval_units,
        before_training=before_training,
    )
    state = tu.run_training(task)

    if cfg["probe_text"] and is_main_process() and cfg.get("do_train", True):
        report_cloze(model, tokenizer, cfg, cloze_path)
    return state

def report_cloze(model, tokenizer, cfg, cloze_path):
    """Fill the probe with the trained model and log it next to the starting model's answer."""
    record = {"probe_text": cfg["probe_text"], "expected": cfg["probe_answer"]}
    if os.path.isfile(cloze_path):
        with open(cloze_path, encoding="utf-8") as f:
            record.update({k: v for k, v in json.load(f).items() if k == "before"})
    record["after"] = cloze_record(model, tokenizer, cfg)
    if cfg["probe_answer"]:
        for when in ("before", "after"):
            if when in record:
                record[f"{when}_correct"] = record[when]["filled"] == cfg["probe_answer"]
                record[f"{when}_answer_in_top_k"] = answer_in_top_k(record[when]["top_k"], cfg["probe_answer"])
    write_json_atomic(cloze_path, record)
    before = record.get("before", {}).get("filled", "?")
    if "after_answer_in_top_k" in record:
        log(f"cloze check: expected {cfg['probe_answer']!r} in each mask's top {cfg['probe_top_k']}: "
               f"before {record.get('before_answer_in_top_k')}, after {record['after_answer_in_top_k']}")
    log(f"cloze check: {cfg['probe_text']}  before training -> {before}  after training -> {record['after']['filled']}"
           + (f"  (expected {cfg['probe_answer']}: {'learned' if record.get('after_correct') and not record.get('before_correct') else 'not learned' if not record.get('after_correct') else 'already known'})"
              if cfg["probe_answer"] else ""))


def run(config=None, **overrides):
    """Run from Python (a notebook cell): `run(max_steps=50)`, `run("configs/x.py", learning_rate=3e-4)` or
    `run({...})`. The same checks and outputs as `python train_mlm.py`; returns the results (all_results.json's
    content). Bad input raises the typed error (paddle_finetune.errors) with the message the command prints."""
    return tu.run_in_process(main, CONFIG, "train_mlm.py", config, overrides)


def cli(argv=None):
    """`python train_mlm.py --key=value ...`: exits 0, 2 with one `error:` line, or 128+N after signal N."""
    tu.run_main(main, CONFIG, prog="train_mlm.py", doc=__doc__, argv=argv)


if __name__ == "__main__":
    cli()
