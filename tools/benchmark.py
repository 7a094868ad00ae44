"""Side-by-side benchmark (issue #7): our Paddle trainer vs pad-to-max vs Hugging Face, in one run.

    python tools/benchmark.py                          # small + base sizes on CSL (or the built-in sample)
    python tools/benchmark.py --sizes small --repeats 5 --output bench.json
    python tools/benchmark.py --smoke                  # tiny and fast: what the test suite runs
    python tools/benchmark.py --device gpu --amp bf16 --sizes base   # on a GPU machine: AMP and MFU

Four setups train the same BART config on the same tokenized data (one char vocab, the same ids),
with the same global batch, max lengths, steps, seed and AdamW hyperparameters:

* ours        the train.py engine as users run it: train_utils.run_training itself (setup_device, the speed
              patches, length-grouped batches, dynamic padding, seq2seq_loss, build_optimizer, the loop's
              per-step syncs and logging), timed from the loop's own train_log.jsonl.
* pad_to_max  the same engine with pad_to_max_length=True, group_by_length=False.
* hf          transformers BartForConditionalGeneration, plain torch loop, DataCollatorForSeq2Seq dynamic
              padding, the same batches as ours, torch AdamW + linear warmup/decay + clip_grad_norm_.
* hf_random   the same HF loop in Seq2SeqTrainer's default batch order (random, group_by_length=False).

Each setup runs in its own process (clean peak RSS; paddle sets OMP_NUM_THREADS=1 on import, which would
otherwise starve torch). Throughput: training in real (non-pad) source+target tokens/s; generation (greedy and
beam 4, KV cache) in generated tokens/s (up to and including eos). Every figure is the median of --repeats timed
rounds after warm-up, with min and max. ROUGE: metrics.rouge_scores on 1000 pairs.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from paddle_finetune.data.batching import epoch_batches
from paddle_finetune.models.loading import count_parameters
from paddle_finetune.paths import PROJECT_ROOT
from paddle_finetune.runtime.environment import setup_device
from paddle_finetune.tasks.summarization import (
    collate,
    generate_ids,
    load_data,
    seq2seq_loss,
    tokenize_examples,
)
from paddle_finetune.training.loop import run_training
from paddle_finetune.training.task import TrainingTask

# Before anything imports paddle (which sets OMP_NUM_THREADS=1) or runs setup_device (which sets MKL_DEBUG_CPU_TYPE):
# the workers get the user's own environment, not what the parent's imports and setup left behind.
USER_ENV = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE")}

ROOT = PROJECT_ROOT

CSL = os.path.join(ROOT, "..", "shared", "data", "csl", "ts_dev.tsv")
SAMPLE = os.path.join(ROOT, "datasets", "sample_summarization")

SIZES = {  # BART shapes; "small" is configs/csl_title.py, "base" is bart-base's shape
    "tiny": dict(d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                 encoder_ffn_dim=128, decoder_ffn_dim=128),
    "small": dict(d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
                  encoder_ffn_dim=1024, decoder_ffn_dim=1024),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                 encoder_ffn_dim=2048, decoder_ffn_dim=2048),
}
COMMON_MODEL = dict(max_position_embeddings=512, dropout=0.1, attention_dropout=0.0, activation_dropout=0.0)
SETUPS = ("ours", "pad_to_max", "hf", "hf_random")
# dense tensor-core peaks (TFLOP/s) for the MFU estimate; fp32 uses the non-tensor-core figure
GPU_PEAK_TFLOPS = {"H100": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0}, "H200": {"fp32": 67.0, "fp16": 989.0, "bf16": 989.0},
                   "A100": {"fp32": 19.5, "fp16": 312.0, "bf16": 312.0}, "V100": {"fp32": 15.7, "fp16": 125.0, "bf16": 0.0},
                   "T4": {"fp32": 8.1, "fp16": 65.0, "bf16": 0.0}, "A10": {"fp32": 31.2, "fp16": 125.0, "bf16": 125.0},
                   "L4": {"fp32": 30.3, "fp16": 121.0, "bf16": 121.0}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="small,base", help="comma list of %s" % ", ".join(SIZES))
    p.add_argument("--setups", default=",".join(SETUPS), help="comma list of %s" % ", ".join(SETUPS))
    p.add_argument("--data", default=None, help="a TSV prompt<TAB>abstract<TAB>title (default: ../shared/data/csl/ts_dev.tsv "
                   "when present, else the built-in sample)")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per repeat (small sizes)")
    p.add_argument("--base_steps", type=int, default=2, help="timed training steps per repeat for the base size")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (and one untimed generation batch)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; median, min and max are reported")
    p.add_argument("--batch_size", type=int, default=32, help="global training batch")
    p.add_argument("--max_source_length", type=int, default=320)
    p.add_argument("--max_target_length", type=int, default=48)
    p.add_argument("--eval_samples", type=int, default=64, help="dev rows generated per round (greedy)")
    p.add_argument("--beam_samples", type=int, default=32, help="dev rows generated per round with beam 4")
    p.add_argument("--eval_batch_size", type=int, default=32)
    p.add_argument("--no_generation", action="store_true", help="training throughput only")
    p.add_argument("--free_length", dest="fixed_length", action="store_false",
                   help="let generation stop at eos (default: min length = max_target_length, so both frameworks generate the "
                        "same number of tokens whatever a briefly trained model predicts)")
    p.add_argument("--learning_rate", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--amp", default="none", choices=("none", "fp16", "bf16"), help="GPU only: autocast + (fp16) loss scaling")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="device peak for MFU; 0 = looked up from the GPU name")
    p.add_argument("--output", default=os.path.join("output", "benchmark", "results.json"), help="JSON results path")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 steps, 1 repeat, few rows: a fast end-to-end check")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per setup process")
    p.add_argument("--_worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.steps, args.base_steps, args.warmup, args.repeats = "tiny", 2, 1, 1, 1
        args.batch_size, args.max_source_length, args.max_target_length = 8, 64, 12
        args.eval_samples, args.beam_samples, args.eval_batch_size = 8, 4, 8
    for size in args.sizes.split(","):
        if size not in SIZES:
            p.error(f"unknown size {size!r}: choose from {', '.join(SIZES)}")
    for setup in args.setups.split(","):
        if setup not in SETUPS:
            p.error(f"unknown setup {setup!r}: choose from {', '.join(SETUPS)}")
    return args


# ----------------------------------------------------------------------------
# shared data: tokenized once by the parent, so every setup sees the same ids
# ----------------------------------------------------------------------------
def prepare_data(args, workdir):
    from paddlenlp.transformers import BertTokenizer

    import train
    from paddle_finetune.data.text import write_char_vocab

    data_path = args.data or (CSL if os.path.isfile(CSL) else None)
    cfg = dict(train.CONFIG, max_source_length=args.max_source_length, max_target_length=args.max_target_length, seed=args.seed)
    if data_path:
        cfg.update(train_file=data_path, dev_file="", dev_size=100, text_column=1, summary_column=2)
        name = os.path.basename(data_path)
    else:
        cfg.update(train_file=os.path.join(SAMPLE, "train.jsonl"), dev_file=os.path.join(SAMPLE, "dev.jsonl"))
        name = "built-in sample"
    data = load_data(cfg)
    vocab = write_char_vocab((t for ex in data["train"] for t in (ex["source"], ex["target"])), os.path.join(workdir, "vocab.txt"))
    tokenizer = BertTokenizer(vocab_file=vocab)
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.sep_token_id, "decoder_start": tokenizer.cls_token_id}
    train_features = tokenize_examples(data["train"], tokenizer, cfg, ids["eos"])
    dev_features = tokenize_examples(data["dev"], tokenizer, cfg, ids["eos"])
    lengths = [len(f["input_ids"]) + len(f["labels"]) for f in train_features]
    batches = {  # epoch 0 then 1, enough for any step count
        group: [b for epoch in range(2) for b in epoch_batches(lengths, args.batch_size, 1, 0, args.seed, epoch, group)]
        for group in (True, False)
    }
    rows = data["train"] + data["dev"]
    pairs = [(rows[i]["target"], rows[(i + 1) % len(rows)]["target"] + rows[i]["source"][:20]) for i in range(len(rows))]
    while len(pairs) < 1000:
        pairs += pairs[: 1000 - len(pairs)]
    shared = {
        "data": name, "vocab_file": vocab, "vocab_size": len(tokenizer.vocab), "ids": ids,
        "train_features": train_features, "dev_features": dev_features,
        "grouped_batches": [[int(i) for i in b] for b in batches[True]],
        "shuffled_batches": [[int(i) for i in b] for b in batches[False]],
        "rouge_pairs": pairs[:1000],
        "n_train": len(train_features), "n_dev": len(dev_features),
        "avg_source_tokens": sum(len(f["input_ids"]) for f in train_features) / len(train_features),
        "avg_target_tokens": sum(len(f["labels"]) for f in train_features) / len(train_features),
    }
    path = os.path.join(workdir, "shared.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(shared, f, ensure_ascii=False)
    return path, shared


def model_config(size, shared):
    ids = shared["ids"]
    return dict(SIZES[size], **COMMON_MODEL, vocab_size=shared["vocab_size"], pad_token_id=ids["pad"], bos_token_id=ids["decoder_start"],
                eos_token_id=ids["eos"], decoder_start_token_id=ids["decoder_start"], forced_eos_token_id=ids["eos"])


def summarize(values):
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_generated(rows, eos, pad):
    """Generated tokens per row: up to and including the first eos, never padding."""
    total = 0
    for row in rows:
        row = [int(t) for t in row]
        n = row.index(eos) + 1 if eos in row else len([t for t in row if t != pad])
        total += n
    return total


def timed_rounds(args, run_steps, steps):
    """Warm up, then `repeats` rounds of `steps` steps: (tokens/s per round, seconds per step per round,
    tokens/s of the first pass, real tokens of the first pass). Used by the HF setups; ours runs the real
    loop instead (worker_paddle).

    The rounds' batches are first run once, timed as the first pass, then the rounds replay them. A batch
    shape seen for the first time pays first-touch memory costs (page faults while the heap grows, which
    took up to 2x a step in paddle); a long run pays them once per new shape, so the rounds report the
    steady state and the first pass reports the cold figure. Pad-to-max has a single shape, so it is warm
    from the start either way.
    """
    cursor = run_steps(0, args.warmup)
    start = time.perf_counter()
    tokens, _ = run_steps(cursor, args.repeats * steps, count=True)
    first_pass, first_tokens = tokens / (time.perf_counter() - start), tokens
    tps, sps = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        tokens, cursor = run_steps(cursor, steps, count=True)
        elapsed = time.perf_counter() - start
        tps.append(tokens / elapsed)
        sps.append(elapsed / steps)
    return tps, sps, first_pass, first_tokens


def generation_rounds(args, generate_batch, features, n_rows, num_beams, eos, pad):
    """generate_batch(features, num_beams) -> id rows; tokens/s per round over n_rows dev rows."""
    rows = features[:n_rows]
    longest = sorted(rows, key=lambda f: -len(f["input_ids"]))[: args.eval_batch_size]
    generate_batch(longest, num_beams)  # warm-up on the largest batch a round will generate
    tps = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        out = generate_batch(rows, num_beams)
        elapsed = time.perf_counter() - start
        tps.append(count_generated(out, eos, pad) / elapsed)
    return tps


# ----------------------------------------------------------------------------
# workers (one process each)
# ----------------------------------------------------------------------------
def loop_rounds(args, records, steps):
    """From the real loop's train_log.jsonl records (logging_steps=1): (tokens/s per round of `steps` steps
    after the warm-up, seconds per step per round, total real tokens after the warm-up)."""
    timed = [r for r in records if r["step"] > args.warmup]
    seconds = [r["tokens"] / r["tokens_per_s"] for r in timed]
    tps, sps = [], []
    for start in range(0, len(timed) - steps + 1, steps):
        round_tokens, round_seconds = sum(r["tokens"] for r in timed[start:start + steps]), sum(seconds[start:start + steps])
        tps.append(round_tokens / round_seconds)
        sps.append(round_seconds / steps)
    return tps, sps, sum(r["tokens"] for r in timed), sum(r["tokens"] for r in timed) / sum(seconds)


def worker_paddle(spec, shared, pad_to_max):
    """ours / pad_to_max: train.py's engine as users run it, through train_utils.run_training.

    The loop runs twice on the same model with the same seed, so it sees the same batches twice: the first
    run's steps after the warm-up are the cold first pass, the second run's are the steady-state rounds (the
    batches are the ones HF's setups time). Throughput comes from the loop's own train_log.jsonl (real
    tokens and tokens/s per step): per-step syncs, logging and the loop's bookkeeping are in the figures;
    the final checkpoint save happens after the last logged step and is not.
    """
    import functools

    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    import train
    from paddle_finetune.checkpoints.output_dir import open_output_dir
    from paddle_finetune.reporting.console import log
    from paddle_finetune.runtime.rng import set_seed

    args = argparse.Namespace(**spec["args"])
    device = setup_device(args.device)
    ids = shared["ids"]
    feats = shared["train_features"]
    steps = spec["steps"]
    cfg = dict(train.CONFIG, learning_rate=args.learning_rate, max_source_length=args.max_source_length,
               max_target_length=args.max_target_length, num_beams=1, eval_batch_size=args.eval_batch_size,
               train_batch_size=args.batch_size, seed=args.seed, max_steps=args.warmup + args.repeats * steps,
               logging_steps=1, save_steps=10**9, save_total_limit=0, report_to="none", device=args.device,
               use_amp=args.device == "gpu" and args.amp != "none", amp_dtype="bfloat16" if args.amp == "bf16" else "float16",
               pad_to_max_length=pad_to_max, group_by_length=not pad_to_max)
    set_seed(args.seed)
    model = BartForConditionalGeneration(BartConfig(**model_config(spec["size"], shared)))
    n_params = count_parameters(model)
    pad_to = (args.max_source_length, args.max_target_length) if pad_to_max else None
    runs = []
    for name in ("first_pass", "steady"):
        out = os.path.join(os.path.dirname(spec["out"]), f"{spec['size']}-{spec['setup']}-{name}")
        run_cfg = dict(cfg, output_dir=out)
        open_output_dir(run_cfg)
        set_seed(args.seed)
        task = TrainingTask(
            config=run_cfg, model=model, tokenizer=None, train_features=feats,
            train_lengths=[len(f["input_ids"]) + len(f["labels"]) for f in feats],
            collate_fn=functools.partial(collate, pad_id=ids["pad"], decoder_start_id=ids["decoder_start"], pad_to=pad_to),
            loss_fn=seq2seq_loss, group_by_length=run_cfg["group_by_length"],
        )
        log(f"benchmark: {name} run of run_training ({run_cfg['max_steps']} steps)")
        run_training(task)
        with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as f:
            runs.append([json.loads(line) for line in f])
    _, _, first_tokens, first_pass = loop_rounds(args, runs[0], steps)
    tps, sps, _, _ = loop_rounds(args, runs[1], steps)
    result = {"train_tokens_per_s": summarize(tps), "train_s_per_step": summarize(sps), "params": n_params,
              "train_tokens_per_s_first_pass": first_pass, "train_tokens_first_pass": first_tokens,
              "first_losses": [r["loss"] for r in runs[0][:3]], "device": device, "engine": "train_utils.run_training"}
    if not args.no_generation and not pad_to_max:
        model.eval()

        def generate_batch(features, num_beams):
            min_len = args.max_target_length if args.fixed_length else 0
            return generate_ids(model, features, dict(cfg, num_beams=num_beams, min_target_length=min_len), ids)

        for name, beams, n in (("greedy", 1, args.eval_samples), ("beam4", 4, args.beam_samples)):
            result[f"gen_{name}_tokens_per_s"] = summarize(
                generation_rounds(args, generate_batch, shared["dev_features"], n, beams, ids["eos"], ids["pad"]))
    return result


def worker_hf(spec, shared):
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertTokenizer,
        DataCollatorForSeq2Seq,
        get_linear_schedule_with_warmup,
    )

    args = argparse.Namespace(**spec["args"])
    device = "cuda" if args.device == "gpu" else "cpu"
    torch.manual_seed(args.seed)
    mc = model_config(spec["size"], shared)
    # paddlenlp's BART has an untied lm_head_weight of its own: untie HF's too, so both are the same model
    config = BartConfig(**mc, scale_embedding=False, activation_function="gelu", tie_word_embeddings=False)
    model = BartForConditionalGeneration(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    tokenizer = BertTokenizer(vocab_file=shared["vocab_file"], do_lower_case=True)
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100, return_tensors="pt")
    steps = spec["steps"]
    total = args.warmup + 2 * args.repeats * steps
    no_decay = [n for n, _ in model.named_parameters() if "bias" in n or "norm" in n.lower()]
    groups = [{"params": [p for n, p in model.named_parameters() if n not in no_decay], "weight_decay": 0.01},
              {"params": [p for n, p in model.named_parameters() if n in no_decay], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate, eps=1e-8)
    warmup = int(0.05 * total)  # train.CONFIG warmup_proportion
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
    amp_dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    use_amp = device == "cuda" and args.amp != "none"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and args.amp == "fp16")
    feats = shared["train_features"]
    # hf: given our length-grouped batches (as Trainer's group_by_length=True would);
    # hf_random: Seq2SeqTrainer's default random order, dynamic padding per batch.
    batches = shared["shuffled_batches" if spec["setup"] == "hf_random" else "grouped_batches"]
    model.train()
    losses = []

    def run_steps(cursor, n, count=False):
        tokens = 0
        for _ in range(n):
            features = [{"input_ids": feats[i]["input_ids"], "labels": feats[i]["labels"]} for i in batches[cursor % len(batches)]]
            cursor += 1
            batch = {k: v.to(device) for k, v in collator(features).items()}
            tokens += int(batch["attention_mask"].sum()) + int((batch["labels"] != -100).sum())
            with torch.autocast(device_type=device, dtype=amp_dtype, enabled=use_amp):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(float(loss))
        return (tokens, cursor) if count else cursor

    tps, sps, first_pass, first_tokens = timed_rounds(args, run_steps, steps)
    result = {"train_tokens_per_s": summarize(tps), "train_s_per_step": summarize(sps), "params": n_params,
              "train_tokens_per_s_first_pass": first_pass, "train_tokens_first_pass": first_tokens,
              "first_losses": losses[:3], "device": device, "torch_threads": torch.get_num_threads()}
    if not args.no_generation:
        model.eval()
        ids = shared["ids"]

        def generate_batch(features, num_beams):
            order = sorted(range(len(features)), key=lambda i: -len(features[i]["input_ids"]))
            out = [None] * len(features)
            with torch.no_grad():
                for start in range(0, len(order), args.eval_batch_size):
                    chunk = order[start:start + args.eval_batch_size]
                    batch = tokenizer.pad([{"input_ids": features[i]["input_ids"]} for i in chunk], return_tensors="pt").to(device)
                    gen = model.generate(**batch, max_new_tokens=args.max_target_length, num_beams=num_beams, do_sample=False,
                                         decoder_start_token_id=ids["decoder_start"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                                         min_new_tokens=args.max_target_length if args.fixed_length else 0, use_cache=True)
                    for i, row in zip(chunk, gen[:, 1:].cpu().numpy()):  # drop the decoder start token
                        out[i] = row
            return out

        for name, beams, n in (("greedy", 1, args.eval_samples), ("beam4", 4, args.beam_samples)):
            result[f"gen_{name}_tokens_per_s"] = summarize(
                generation_rounds(args, generate_batch, shared["dev_features"], n, beams, ids["eos"], ids["pad"]))
    return result


def run_worker(spec_path):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["shared"], encoding="utf-8") as f:
        shared = json.load(f)
    if spec["setup"] in ("hf", "hf_random"):
        result = worker_hf(spec, shared)
    else:
        result = worker_paddle(spec, shared, pad_to_max=spec["setup"] == "pad_to_max")
    add_mfu(spec, result)
    result["peak_rss_mb"] = peak_rss_mb()
    with open(spec["out"], "w", encoding="utf-8") as f:
        json.dump(result, f)


def add_mfu(spec, result):
    """MFU ~ 6 * params * tokens/s over the device peak (a rough transformer estimate; GPU unless --peak_tflops)."""
    args = spec["args"]
    peak = args.get("peak_tflops") or 0.0
    if not peak and args["device"] == "gpu":
        try:
            if spec["setup"] == "hf":
                import torch

                name = torch.cuda.get_device_name(0)
            else:
                import paddle

                name = paddle.device.cuda.get_device_name(0)
            precision = {"none": "fp32", "fp16": "fp16", "bf16": "bf16"}[args["amp"]]
            peak = next((v[precision] for k, v in GPU_PEAK_TFLOPS.items() if k in name), 0.0)
            result["gpu_name"] = name
        except Exception as e:  # noqa: BLE001 - a missing name only drops the MFU figure
            result["gpu_name"] = f"unknown ({e})"
    if peak:
        result["peak_tflops"] = peak
        result["mfu"] = 6.0 * result["params"] * result["train_tokens_per_s"]["median"] / (peak * 1e12)
    return bool(peak)


# ----------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------
def rouge_timing(pairs, repeats):
    from paddle_finetune.evaluation.rouge import rouge_scores

    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    rouge_scores(preds[:50], refs[:50])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        rouge_scores(preds, refs)
        times.append(time.perf_counter() - start)
    return summarize(times)


def hardware():
    info = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def ratio(a, b):
    return a / b if a and b else None


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        run_worker(args._worker)
        return None
    if args.device == "cpu" and args.amp != "none":
        print("note: --amp is a GPU feature; on CPU both frameworks train in fp32", file=sys.stderr)
    results = {"command": "python tools/benchmark.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "hardware": hardware(), "settings": {k: v for k, v in vars(args).items() if not k.startswith("_")}, "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        shared_path, shared = prepare_data(args, workdir)
        results["data"] = {k: shared[k] for k in ("data", "n_train", "n_dev", "vocab_size", "avg_source_tokens", "avg_target_tokens")}
        results["rouge_1000_pairs_s"] = rouge_timing(shared["rouge_pairs"], max(3, args.repeats))
        for size in args.sizes.split(","):
            steps = args.base_steps if size == "base" else args.steps
            size_results = {}
            for setup in args.setups.split(","):
                spec = {"setup": setup, "size": size, "steps": steps, "shared": shared_path, "args": vars(args),
                        "out": os.path.join(workdir, f"{size}-{setup}.json")}
                spec_path = os.path.join(workdir, f"{size}-{setup}-spec.json")
                with open(spec_path, "w", encoding="utf-8") as f:
                    json.dump(spec, f)
                print(f"[{time.strftime('%H:%M:%S')}] {size}/{setup}: {steps} steps x {args.repeats} repeats "
                      f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
                env = {k: v for k, v in os.environ.items() if k not in USER_ENV}
                env.update({k: v for k, v in USER_ENV.items() if v is not None})
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", spec_path], cwd=ROOT, env=env,
                                      capture_output=True, text=True, timeout=args.timeout)
                if proc.returncode != 0:
                    raise SystemExit(f"{size}/{setup} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
                with open(spec["out"], encoding="utf-8") as f:
                    size_results[setup] = json.load(f)
            ratios = {}
            ours = size_results.get("ours")
            if ours:
                for other in ("pad_to_max", "hf", "hf_random"):
                    if other in size_results:
                        for key in ("train_tokens_per_s", "gen_greedy_tokens_per_s", "gen_beam4_tokens_per_s"):
                            if key in ours and key in size_results[other]:
                                ratios[f"{key}_ours_over_{other}"] = ratio(ours[key]["median"], size_results[other][key]["median"])
                        ratios[f"train_tokens_per_s_first_pass_ours_over_{other}"] = ratio(
                            ours["train_tokens_per_s_first_pass"], size_results[other]["train_tokens_per_s_first_pass"])
                        ratios[f"peak_rss_ours_over_{other}"] = ratio(ours["peak_rss_mb"], size_results[other]["peak_rss_mb"])
            results["sizes"][size] = {"model": SIZES[size], "steps": steps, "setups": size_results, "ratios": ratios}
    results["finished_loadavg"] = os.getloadavg()
    print_table(results)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.output}")
    return results


def fmt(stat, digits=0):
    if not stat:
        return "-"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"


def print_table(results):
    d = results["data"]
    print(f"\ndata: {d['data']} ({d['n_train']} train / {d['n_dev']} dev, avg {d['avg_source_tokens']:.0f} source + "
          f"{d['avg_target_tokens']:.0f} target tokens); {results['hardware'].get('Model name', '?')}, {results['hardware']['cpu_count']} CPUs")
    print("train tok/s: median [min-max] of the rounds (steady state); first pass: the same batches, each run for the first time\n")
    header = (f"{'size':<6} {'setup':<11} {'train tok/s':>24} {'first pass':>10} {'greedy gen tok/s':>22} {'beam4 gen tok/s':>22} "
              f"{'peak RSS MB':>11}")
    print(header)
    print("-" * len(header))
    for size, sr in results["sizes"].items():
        for setup, r in sr["setups"].items():
            print(f"{size:<6} {setup:<11} {fmt(r['train_tokens_per_s']):>24} {r['train_tokens_per_s_first_pass']:>10.0f} "
                  f"{fmt(r.get('gen_greedy_tokens_per_s')):>22} "
                  f"{fmt(r.get('gen_beam4_tokens_per_s')):>22} {r['peak_rss_mb']:>11.0f}" + (f"  MFU {r['mfu']:.1%}" if "mfu" in r else ""))
        for key, value in sr["ratios"].items():
            if value is not None:
                print(f"{'':<6} {key}: {value:.2f}x")
    rouge = results["rouge_1000_pairs_s"]
    print(f"\nROUGE (metrics.rouge_scores) for 1000 pairs: {rouge['median']:.3f} s [{rouge['min']:.3f}-{rouge['max']:.3f}]")


if __name__ == "__main__":
    main()
