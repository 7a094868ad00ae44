"""Side-by-side benchmark (issues #7, #23): our Paddle trainer vs pad-to-max vs Hugging Face, in one run, in
alternating rounds.

    python tools/benchmark.py                          # small + base sizes on CSL (or the built-in sample)
    python tools/benchmark.py --sizes small --setups ours,hf --repeats 5 --output bench.json
    python tools/benchmark.py --smoke                  # tiny and fast: what the test suite runs
    python tools/benchmark.py --recompute              # activation checkpointing on both sides (peak RSS)
    python tools/benchmark.py --ours_env MKL_CBWR=AUTO,STRICT   # an environment variable for our setups only
    python tools/benchmark.py --device gpu --amp bf16 --sizes base   # on a GPU machine: AMP and MFU

Four setups train the same BART config on the same tokenized data (one char vocab, the same ids),
with the same global batch, max lengths, steps, seed and AdamW hyperparameters:

* ours        the train.py engine as users run it: train_utils.run_training itself (setup_device, the speed
              patches, length-grouped batches, dynamic padding, seq2seq_loss, build_optimizer, the loop's
              per-step syncs and logging).
* pad_to_max  the same engine with pad_to_max_length=True, group_by_length=False.
* hf          transformers BartForConditionalGeneration, plain torch loop, DataCollatorForSeq2Seq dynamic
              padding, the same batches as ours, torch AdamW + linear warmup/decay + clip_grad_norm_.
* hf_random   the same HF loop in Seq2SeqTrainer's default batch order (random, group_by_length=False).

Each setup runs in its own process (clean peak RSS; paddle sets OMP_NUM_THREADS=1 on import, which would
otherwise starve torch), and all of a size's processes live together: the driver hands the turn to one at a
time, in alternating order (A B, B A, ...), so each timed round of ours sits next to HF's on the same batches and
whatever else runs on the machine falls on both (tools/benchmark_workers.py). Throughput: training in real
(non-pad) source+target tokens/s, each step timed from the moment the loop asks for its batch to the next;
generation (greedy and beam 4, KV cache) in generated tokens/s (up to and including eos). Every figure is the
median of --repeats rounds after warm-up, with min and max; the ratios are medians of the per-round ratios.
The phase breakdown (data, forward, backward, optimizer) times the rounds' batches once more through an
instrumented step. The CPU is described as the kernel reports it (model, family/model numbers, vector units).
ROUGE: metrics.rouge_scores on 1000 pairs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from paddle_finetune.data.batching import epoch_batches
from paddle_finetune.paths import PROJECT_ROOT
from paddle_finetune.tasks.summarization import load_data, tokenize_examples

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
PHASES = ("data", "forward", "backward", "optimizer")
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
    p.add_argument("--steps", type=int, default=5, help="timed training steps per round (small sizes)")
    p.add_argument("--base_steps", type=int, default=2, help="timed training steps per round for the base size")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per run (and one untimed generation batch)")
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
    p.add_argument("--recompute", action="store_true", help="activation checkpointing: recompute=True for ours, "
                   "gradient_checkpointing_enable() for HF")
    p.add_argument("--no_fast_kernels", action="store_true", help="ours with fast_kernels=False (paddle's own code)")
    p.add_argument("--ours_env", action="append", default=[], metavar="KEY=VALUE",
                   help="an environment variable for ours and pad_to_max only (repeatable), e.g. MALLOC_MMAP_THRESHOLD_=131072")
    p.add_argument("--device", default="cpu", choices=("cpu", "gpu"))
    p.add_argument("--amp", default="none", choices=("none", "fp16", "bf16"), help="GPU only: autocast + (fp16) loss scaling")
    p.add_argument("--peak_tflops", type=float, default=0.0, help="device peak for MFU; 0 = looked up from the GPU name")
    p.add_argument("--output", default=os.path.join("output", "benchmark", "results.json"), help="JSON results path")
    p.add_argument("--smoke", action="store_true", help="tiny model, 2 steps, 1 repeat, few rows: a fast end-to-end check")
    p.add_argument("--timeout", type=int, default=3600, help="seconds any one command of a worker may take")
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
    for item in args.ours_env:
        if "=" not in item:
            p.error(f"--ours_env takes KEY=VALUE, got {item!r}")
    return args


def namespace(args):
    return argparse.Namespace(**args)


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


def hardware(cpuinfo_path="/proc/cpuinfo"):
    """What the next host change will need explained: the CPU as the kernel reports it, its vector units, the cores."""
    info = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0]}
    fields = {}
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    info.update({"Model name": fields.get("model name", "?"), "vendor": fields.get("vendor_id", "?"),
                 "family": fields.get("cpu family"), "model": fields.get("model"), "stepping": fields.get("stepping"),
                 "hypervisor": "hypervisor" in flags,
                 "vector_units": [name for name, need in (("AVX2", "avx2"), ("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"),
                                                          ("AVX512-FP16", "avx512_fp16"), ("AMX", "amx_tile")) if need in flags]})
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("CPU(s)", "Thread(s) per core", "Core(s) per socket", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[key.strip()] = value.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def cpu_line(hw):
    """One line naming the CPU: "Intel(R) Xeon(R) Processor (GenuineIntel family 6 model 143, KVM guest), 2 CPUs; AVX2, ..."."""
    where = f"{hw.get('vendor', '?')} family {hw.get('family')} model {hw.get('model')}"
    if hw.get("hypervisor"):
        where += f", {hw.get('Hypervisor vendor', 'VM')} guest"
    return f"{hw.get('Model name', '?')} ({where}), {hw['cpu_count']} CPUs; {', '.join(hw.get('vector_units') or ['no AVX2'])}"


class Worker:
    """A setup's process and the driver's ends of its pipes."""

    def __init__(self, spec, spec_path, env, timeout):
        command_read, self.command_write = os.pipe()
        self.reply_read, reply_write = os.pipe()
        spec.update(command_fd=command_read, reply_fd=reply_write)
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        self.log = open(spec_path + ".log", "w", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--_worker", spec_path], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, pass_fds=(command_read, reply_write))
        os.close(command_read)
        os.close(reply_write)
        self.commands = os.fdopen(self.command_write, "w", encoding="utf-8")
        self.replies = os.fdopen(self.reply_read, "r", encoding="utf-8")
        self.name, self.timeout, self.spec_path = spec["setup"], timeout, spec_path

    def receive(self):
        import select

        ready, _, _ = select.select([self.replies], [], [], self.timeout)
        line = self.replies.readline() if ready else ""
        if not line:
            self.proc.kill()
            self.log.flush()
            with open(self.spec_path + ".log", encoding="utf-8", errors="replace") as f:
                tail = f.read()[-4000:]
            raise SystemExit(f"{self.name} failed ({'timed out' if not ready else f'exit {self.proc.wait()}'}):\n{tail}")
        return json.loads(line)

    def ask(self, **command):
        self.commands.write(json.dumps(command) + "\n")
        self.commands.flush()
        return self.receive()

    def close(self):
        self.proc.wait(timeout=120)
        self.log.close()


def run_size(args, size, shared, shared_path, workdir):
    """Every setup of one size, alive together, in alternating rounds. Returns {setup: result}."""
    steps = args.base_steps if size == "base" else args.steps
    setups = args.setups.split(",")
    env = {k: v for k, v in os.environ.items() if k not in USER_ENV}
    env.update({k: v for k, v in USER_ENV.items() if v is not None})
    ours_env = dict(item.split("=", 1) for item in args.ours_env)
    workers = {}
    for setup in setups:
        spec = {"setup": setup, "size": size, "steps": steps, "shared": shared_path, "args": vars(args),
                "out": os.path.join(workdir, f"{size}-{setup}.json")}
        worker_env = dict(env, **ours_env) if setup in ("ours", "pad_to_max") else env
        workers[setup] = Worker(spec, os.path.join(workdir, f"{size}-{setup}-spec.json"), worker_env, args.timeout)
    results = {s: workers[s].receive() for s in setups}  # ready: parameters, device
    rounds = {s: {} for s in setups}

    def turn(label, index, **command):
        for s in (setups if index % 2 == 0 else setups[::-1]):
            rounds[s].setdefault(label, []).append(workers[s].ask(**command))

    print(f"[{time.strftime('%H:%M:%S')}] {size}: {', '.join(setups)}: {steps} steps x {args.repeats} rounds "
          f"(load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    turn("first_pass", 0, do="train")
    for r in range(args.repeats):
        turn("train", r, do="train")
    turn("phases", 0, do="phases")
    if not args.no_generation:
        ids = shared["ids"]
        for name, beams in (("greedy", 1), ("beam4", 4)):
            gen_setups = [s for s in setups if s != "pad_to_max"]
            for s in gen_setups:
                workers[s].ask(do="gen", beams=beams, warm=True, eos=ids["eos"], pad=ids["pad"])
            for r in range(args.repeats):
                for s in (gen_setups if r % 2 == 0 else gen_setups[::-1]):
                    rounds[s].setdefault(name, []).append(workers[s].ask(do="gen", beams=beams, eos=ids["eos"], pad=ids["pad"]))
    for s in setups:
        results[s].update(workers[s].ask(do="finish"))
        workers[s].close()
        results[s].update(summarize_rounds(rounds[s]))
        add_mfu({"setup": s, "args": vars(args)}, results[s])
    return results, steps


def summarize_rounds(rounds):
    """The worker's replies as the result's figures: tokens/s per round (median, min, max), the first pass, phases."""
    result = {}
    first = rounds["first_pass"][0]
    result["train_tokens_first_pass"] = sum(first["tokens"])
    result["train_tokens_per_s_first_pass"] = sum(first["tokens"]) / sum(first["seconds"])
    result["train_tokens_per_s"] = summarize([sum(r["tokens"]) / sum(r["seconds"]) for r in rounds["train"]])
    result["train_s_per_step"] = summarize([statistics.mean(r["seconds"]) for r in rounds["train"]])
    result["round_train_tokens_per_s"] = [sum(r["tokens"]) / sum(r["seconds"]) for r in rounds["train"]]
    phases = rounds["phases"][0]["phases"]
    result["phases_s_per_step"] = dict(phases, loop_other=max(0.0, result["train_s_per_step"]["median"] - sum(phases.values())))
    for name in ("greedy", "beam4"):
        if name in rounds:
            per_round = [r["tokens"] / r["seconds"] for r in rounds[name]]
            result[f"gen_{name}_tokens_per_s"] = summarize(per_round)
            result[f"round_gen_{name}_tokens_per_s"] = per_round
    return result


def summarize(values):
    values = [float(v) for v in values]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def ratios_against(ours, other):
    """ours over other: the median of the per-round ratios (rounds ran side by side), first pass and peak RSS."""
    out = {}
    for key in ("train_tokens_per_s", "gen_greedy_tokens_per_s", "gen_beam4_tokens_per_s"):
        a, b = ours.get("round_" + key), other.get("round_" + key)
        if a and b:
            out[key] = statistics.median(x / y for x, y in zip(a, b))
    out["train_tokens_per_s_first_pass"] = ours["train_tokens_per_s_first_pass"] / other["train_tokens_per_s_first_pass"]
    out["peak_rss"] = ours["peak_rss_mb"] / other["peak_rss_mb"]
    return out


def main(argv=None):
    args = parse_args(argv)
    if args._worker:
        import benchmark_workers

        run_worker(args._worker, benchmark_workers)
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
            size_results, steps = run_size(args, size, shared, shared_path, workdir)
            ratios = {}
            if "ours" in size_results:
                for other in ("pad_to_max", "hf", "hf_random"):
                    if other in size_results:
                        for key, value in ratios_against(size_results["ours"], size_results[other]).items():
                            ratios[f"{key}_ours_over_{other}"] = value
            results["sizes"][size] = {"model": SIZES[size], "steps": steps, "setups": size_results, "ratios": ratios}
    results["finished_loadavg"] = os.getloadavg()
    print_table(results)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
        print(f"wrote {args.output}")
    return results


def run_worker(spec_path, workers):
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    with open(spec["shared"], encoding="utf-8") as f:
        shared = json.load(f)
    channel = workers.Channel(spec)
    helpers = sys.modules[__name__]
    if spec["setup"] in ("hf", "hf_random"):
        workers.worker_hf(spec, shared, channel, helpers)
    else:
        workers.worker_paddle(spec, shared, channel, helpers)


def fmt(stat, digits=0):
    if not stat:
        return "-"
    return f"{stat['median']:.{digits}f} [{stat['min']:.{digits}f}-{stat['max']:.{digits}f}]"


def print_table(results):
    d = results["data"]
    print(f"\ndata: {d['data']} ({d['n_train']} train / {d['n_dev']} dev, avg {d['avg_source_tokens']:.0f} source + "
          f"{d['avg_target_tokens']:.0f} target tokens)")
    print(f"CPU: {cpu_line(results['hardware'])}; load {results['hardware'].get('loadavg_at_start', ['?'])[0]} at the start, "
          f"{results['finished_loadavg'][0]:.2f} at the end")
    print("train tok/s: median [min-max] of the rounds (steady state); first pass: the same batches, each run for the first time;"
          " ratios: median of the per-round ratios\n")
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
    print("\nphases, ms per training step (the rounds' batches through an instrumented step; loop_other: the round's step"
          " time minus the phases)")
    print(f"{'size':<6} {'setup':<11} " + " ".join(f"{p:>9}" for p in PHASES + ("loop_other",)))
    for size, sr in results["sizes"].items():
        for setup, r in sr["setups"].items():
            ph = r["phases_s_per_step"]
            print(f"{size:<6} {setup:<11} " + " ".join(f"{1000 * ph[p]:>9.0f}" for p in PHASES + ("loop_other",)))
    rouge = results["rouge_1000_pairs_s"]
    print(f"\nROUGE (metrics.rouge_scores) for 1000 pairs: {rouge['median']:.3f} s [{rouge['min']:.3f}-{rouge['max']:.3f}]")


if __name__ == "__main__":
    main()
