"""Train or fine-tune a causal language model (GPT) with PaddlePaddle.

    python train_clm.py                                 # built-in sample corpus, tiny GPT, CPU-friendly
    python train_clm.py --train_file=corpus.txt --block_size=256
    python train_clm.py --train_file=a.tsv --text_column=1 --dev_file=b.tsv

Texts are joined (each ended by the end-of-text token) and cut into block_size blocks; the
labels are the inputs, shifted by one inside the loss. Perplexity is exp of the dev loss.
Generate with `tools/generate_text.py MODEL_DIR "prompt" --strategy greedy|top_k|top_p`.
Every key below can be overridden; `python train_clm.py --help` lists them.

Imports: the engine (train_utils) and the project's modules it names; paddle and paddlenlp inside the
functions (so `--help` answers without loading them).
"""
import functools
import os

import numpy as np

import train_utils as tu
from batching import to_tensors
from configuration import (check_model_config, check_rules, numeric_rule, one_of, positive, resolve_greater_is_better,
                           training_rules)
from distributed import is_main_process
from reporting import log, write_json_atomic
from data_utils import decode_tokens, load_text_splits
from metrics import loss_and_perplexity

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds python, numpy and paddle; >= 0
    output_dir="output/clm",  # checkpoints, logs and the sample generation; relative to where you run
    overwrite_output_dir=False,  # allow a new run to replace the files of an old one in output_dir
    resume_from_checkpoint=None,  # "auto" (newest complete checkpoint in output_dir) or a checkpoint path
    resume_ignore_mismatch=False,  # resume even when a changed setting breaks exactness (expert use)
    do_train=True,  # False: only evaluate pretrained_model on dev/test
    device="auto",  # "auto" (GPU when there is one), "gpu" or "cpu"; any case ("GPU")
    fast_kernels=True,  # the speed patches of speedups.py (CPU kernels, MKL, malloc, beam search); False = paddle's own code
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
    return {"input_ids": input_ids, "labels": labels, "num_tokens": int((labels != -100).sum())}


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


def batch_loss(model, features, pad_id):
    """[summed next-token loss, predicted tokens] of one batch of blocks (zeros when it predicts nothing)."""
    batch = collate(features, pad_id=pad_id)
    predicted = int((batch["labels"][:, 1:] != -100).sum())
    batch.pop("num_tokens")
    if not predicted:
        return [0.0, 0]
    return [float(clm_loss(model, to_tensors(batch))) * predicted, predicted]


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
    from evaluation import in_order_units

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

    def predict_fn(model_, split, unit):
        return batch_loss(model_, [features[split][i] for i in unit], pad_id)

    def score_fn(split, outputs, step):
        return loss_and_perplexity(outputs)

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


if __name__ == "__main__":
    tu.run_main(main, CONFIG, prog="train_clm.py", doc=__doc__)
