"""Estimate what the LCSTS recipe (configs/lcsts_new.yaml) costs on one 16/32 GB GPU, from the model's size and
training-step costs measured here, on CPU. An estimate: no GPU ran it (see the printed assumptions).

    python tools/estimate_lcsts.py                     # measures (a few minutes on 2 cores), prints the estimate
    python tools/estimate_lcsts.py --gpu_tflops 40     # another GPU's dense fp16 matmul throughput (T4: ~40)

Measured on this CPU, in separate processes (clean peak RSS), with random weights in fnlp/bart-base-chinese's shape
(its config.json: vocab 51271, d_model 768, 6+6 layers, 12 heads, FFN 3072, 1024 positions), this project's loss
(seq2seq_loss), AdamW and speed patches, at LCSTS-like lengths (--source_tokens, --target_tokens):

* the parameter count, exactly;
* peak RSS after training steps at two batch sizes: the fixed part (weights, gradients, AdamW moments, the
  framework) and the activations per example (fp32);
* seconds per step, against the matmul FLOPs counted from the shape: the fraction of this CPU's own dense-matmul
  throughput (measured too) that a whole training step reaches.

The GPU time assumes a step reaches that same fraction of --gpu_tflops (the optimistic end) or half of it (the other
end: small kernels and launches weigh more on a GPU than on a CPU); the GPU memory takes the fixed part as 16 bytes
per parameter (fp32 weights and gradients, two AdamW moments) plus fp16 copies of the weights, the activations at
half (fp16 under AMP O1) to all of the fp32 figure, and --cuda_overhead_gb for the CUDA context and allocator.

Imports: the standard library; paddle and paddlenlp in the workers; of the project `speedups`, `tasks.summarization`
and `runtime.environment`.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# fnlp/bart-base-chinese (the updated release, 12/2022), config.json
BART_BASE_CHINESE = dict(vocab_size=51271, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                         decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                         max_position_embeddings=1024, pad_token_id=0, bos_token_id=101, eos_token_id=102,
                         decoder_start_token_id=102, forced_eos_token_id=102, dropout=0.1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train_examples", type=int, default=2_400_591, help="LCSTS part I, the training set")
    p.add_argument("--epochs", type=float, default=3, help="configs/lcsts_new: num_train_epochs")
    p.add_argument("--batch_size", type=int, default=64, help="configs/lcsts_new: train_batch_size")
    p.add_argument("--source_tokens", type=int, default=110, help="LCSTS texts: about 100 characters, + [CLS]/[SEP]")
    p.add_argument("--target_tokens", type=int, default=20, help="LCSTS summaries: about 18 characters, + eos")
    p.add_argument("--measure_batches", default="2,6", help="two CPU batch sizes for the memory fit")
    p.add_argument("--steps", type=int, default=3, help="timed CPU steps per batch size (after one warm-up)")
    p.add_argument("--gpu_tflops", type=float, default=80.0,
                   help="the GPU's dense fp16 matmul throughput (V100 16/32 GB: 125 peak, ~80 reached by large matmuls)")
    p.add_argument("--cuda_overhead_gb", type=float, default=1.0, help="CUDA context, cuDNN/cuBLAS workspaces, allocator")
    p.add_argument("--output", default="", help="also write the measurements and the estimate as JSON here")
    p.add_argument("--_worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def training_flops_per_example(cfg, source, target):
    """Matmul FLOPs of one example's forward + backward (3x forward): projections, FFNs, attention, the LM head
    (on target tokens only, as seq2seq_loss computes it)."""
    d, f, v = cfg["d_model"], cfg["encoder_ffn_dim"], cfg["vocab_size"]
    encoder = cfg["encoder_layers"] * (source * (8 * d * d + 4 * d * f) + 4 * source * source * d)
    decoder = cfg["decoder_layers"] * (target * (8 * d * d + 4 * d * f) + 4 * target * target * d  # self-attention, FFN
                                       + target * 4 * d * d + source * 4 * d * d + 4 * target * source * d)  # cross
    head = 2 * target * d * v
    return 3 * (encoder + decoder + head)


# ----------------------------------------------------------------------------
# one measurement (a worker process)
# ----------------------------------------------------------------------------
def worker(args, batch):
    import zlib  # noqa: F401 - paddle 2.6 ships its own zlib: the system one must load first

    import numpy as np
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    from paddle_finetune import speedups
    from paddle_finetune.runtime.environment import setup_device
    from paddle_finetune.tasks.summarization import collate, seq2seq_loss

    setup_device("cpu")
    paddle.seed(0)
    model = BartForConditionalGeneration(BartConfig(**BART_BASE_CHINESE))
    model.train()
    speedups.use_fast_cpu_kernels(model)
    optimizer = paddle.optimizer.AdamW(learning_rate=5e-5, parameters=model.parameters(), weight_decay=0.01)
    rng = np.random.RandomState(0)
    features = [{"input_ids": [101] + list(rng.randint(200, 21000, args.source_tokens - 2)) + [102],
                 "labels": list(rng.randint(200, 21000, args.target_tokens - 1)) + [102]} for _ in range(batch)]
    arrays = collate(features, pad_id=0, decoder_start_id=102).arrays
    times = []
    for step in range(args.steps + 1):
        started = time.perf_counter()
        loss = seq2seq_loss(model, {k: paddle.to_tensor(a) for k, a in arrays.items()})
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        float(loss)
        if step:  # the first step allocates the AdamW moments and warms the kernels up
            times.append(time.perf_counter() - started)
    # the CPU's own dense-matmul throughput, at the FFN's shape for this batch
    a = paddle.randn([batch * args.source_tokens, BART_BASE_CHINESE["d_model"]])
    w = paddle.randn([BART_BASE_CHINESE["d_model"], BART_BASE_CHINESE["encoder_ffn_dim"]])
    paddle.matmul(a, w).numpy()
    started, repeats = time.perf_counter(), 10
    for _ in range(repeats):
        out = paddle.matmul(a, w)
    out.numpy()
    matmul_s = (time.perf_counter() - started) / repeats
    params = sum(int(np.prod(p.shape)) for p in model.parameters())
    print(json.dumps({"batch": batch, "params": params, "step_s": statistics.median(times), "step_s_all": times,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                      "matmul_gflops": 2 * a.shape[0] * a.shape[1] * w.shape[1] / matmul_s / 1e9}))


# ----------------------------------------------------------------------------
# the estimate
# ----------------------------------------------------------------------------
def measure(args, batch):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", str(batch),
                           "--source_tokens", str(args.source_tokens), "--target_tokens", str(args.target_tokens),
                           "--steps", str(args.steps)], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise SystemExit(f"error: the measurement at batch {batch} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def estimate(args, runs):
    small, large = runs
    params = large["params"]
    per_example_mb = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (large["batch"] - small["batch"])
    fixed_mb = small["peak_rss_mb"] - per_example_mb * small["batch"]
    flops = training_flops_per_example(BART_BASE_CHINESE, args.source_tokens, args.target_tokens)
    cpu_gflops = flops * large["batch"] / large["step_s"] / 1e9
    fraction = cpu_gflops / large["matmul_gflops"]
    steps = int(args.train_examples * args.epochs / args.batch_size)
    step_s_fast = flops * args.batch_size / (args.gpu_tflops * 1e12 * fraction)
    hours = (steps * step_s_fast / 3600, 2 * steps * step_s_fast / 3600)
    fixed_gpu_gb = params * (16 + 2) / 1e9 + args.cuda_overhead_gb
    activations_gb = (0.5 * per_example_mb * args.batch_size / 1024, per_example_mb * args.batch_size / 1024)
    return {
        "measured_on_cpu": {"params": params, "runs": runs, "activation_mb_per_example_fp32": round(per_example_mb, 1),
                            "fixed_mb": round(fixed_mb, 1), "training_gflops_per_example": round(flops / 1e9, 2),
                            "step_gflops_per_s": round(cpu_gflops, 1), "matmul_gflops_per_s": round(large["matmul_gflops"], 1),
                            "fraction_of_matmul_throughput": round(fraction, 3)},
        "assumed": {"train_examples": args.train_examples, "epochs": args.epochs, "batch_size": args.batch_size,
                    "source_tokens": args.source_tokens, "target_tokens": args.target_tokens, "gpu_tflops": args.gpu_tflops,
                    "cuda_overhead_gb": args.cuda_overhead_gb},
        "estimate_gpu": {"steps": steps, "step_s": [round(step_s_fast, 3), round(2 * step_s_fast, 3)],
                         "training_hours": [round(h, 1) for h in hours],
                         "memory_gb": [round(fixed_gpu_gb + a, 1) for a in activations_gb]},
    }


def main(argv=None):
    args = parse_args(argv)
    if args._worker is not None:
        worker(args, args._worker)
        return 0
    batches = sorted(int(b) for b in args.measure_batches.split(","))
    runs = [measure(args, b) for b in batches]
    result = estimate(args, runs)
    cpu, gpu = result["measured_on_cpu"], result["estimate_gpu"]
    print(f"measured on this CPU: {cpu['params'] / 1e6:.1f}M parameters; "
          + "; ".join(f"batch {r['batch']}: {r['step_s']:.2f} s/step, peak RSS {r['peak_rss_mb']:.0f} MB" for r in runs))
    print(f"  {cpu['training_gflops_per_example']} GFLOP per example (forward + backward) -> {cpu['step_gflops_per_s']} GFLOP/s, "
          f"{cpu['fraction_of_matmul_throughput']:.0%} of this CPU's dense matmul ({cpu['matmul_gflops_per_s']} GFLOP/s); "
          f"activations {cpu['activation_mb_per_example_fp32']} MB per example (fp32), fixed {cpu['fixed_mb']:.0f} MB")
    print(f"estimate (not measured) for {args.epochs:g} epochs of {args.train_examples:,} examples at batch {args.batch_size} "
          f"({gpu['steps']:,} steps) on a GPU reaching {args.gpu_tflops:g} TFLOP/s in fp16 matmuls:")
    print(f"  {gpu['step_s'][0]}-{gpu['step_s'][1]} s/step, {gpu['training_hours'][0]}-{gpu['training_hours'][1]} h of "
          f"training (evaluation extra), {gpu['memory_gb'][0]}-{gpu['memory_gb'][1]} GB of GPU memory")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
