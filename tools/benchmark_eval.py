"""Evaluation throughput with one process and with two data-parallel ranks (issue #16), on real data.

    python tools/benchmark_eval.py                          # CSL ts_dev.tsv (1000 abstracts) when present, else the sample
    python tools/benchmark_eval.py --model output/csl_title --eval_batch_size 32 --output bench_eval.json

It trains a model briefly once (configs/csl_title.py's BART, or --model to use one), then evaluates it on the same
rows with `train.py --do_train=False` in three setups:

* one process with every core as math threads (what `python train.py` gets);
* two ranks through Paddle's own launcher (`-m paddle.distributed.launch --nproc_per_node 2`), each with
  cores / 2 threads: every rank generates its share of the length-sorted batches, rank 0 gathers and scores;
* one process with cores / 2 threads (what one of those ranks would do alone).

Rows/s is rows / the evaluation's wall time as the main log states it ("eval dev: N rows in S s": generation,
gathering and ROUGE; not process start-up or loading). It also says whether the three wrote identical
predictions_dev.jsonl and metrics. On a CPU two ranks share the cores one process uses as threads, yet they can be
faster: generating small batches is mostly per-op framework work on one core, which more threads do not spread
and more processes do (measured on 2 cores: one process gains little from its second thread). Other jobs on the
machine skew the figures: the load average is printed with them.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSL = os.path.join(ROOT, "..", "shared", "data", "csl", "ts_dev.tsv")
SAMPLE_DEV = os.path.join(ROOT, "datasets", "sample_summarization", "dev.jsonl")
EVAL_LINE = re.compile(r"eval dev: (\d+) rows in ([\d.]+) s")


def data_args(path):
    """train.py arguments that read `path` as the dev split (CSL: headerless TSV, abstract -> title)."""
    if path.endswith(".tsv"):
        return [f"--dev_file={path}", "--text_column=1", "--summary_column=2"]
    return [f"--dev_file={path}"]


def environment(threads):
    """The user's environment with OMP_NUM_THREADS set (this process may have imported nothing, but be safe)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def run(cmd, threads, what):
    started = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=environment(threads))
    if result.returncode != 0:
        sys.exit(f"error: {what} failed (rc {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - started


def train_model(out, data, steps):
    """configs/csl_title.py's BART, trained `steps` steps on `data` (dev_size rows held out are not used here)."""
    train_data = [f"--train_file={data}", "--text_column=1", "--summary_column=2"] if data.endswith(".tsv") else \
        [f"--train_file={os.path.join(ROOT, 'datasets', 'sample_summarization', 'train.jsonl')}", f"--dev_file={data}"]
    cmd = [sys.executable, "train.py", "--config", "configs/csl_title.py", *train_data, f"--max_steps={steps}",
           f"--save_steps={steps}", "--report_to=none", "--device=cpu", f"--output_dir={out}", "--overwrite_output_dir=True"]
    seconds = run(cmd, os.cpu_count() or 1, "training the benchmark model")
    print(f"trained {out} ({steps} steps, {seconds:.0f} s)", flush=True)
    return out


def evaluate(setup, model, data, out, args):
    """(rows, seconds) of one evaluation of `setup`: "one", "ranks" or "one_half"."""
    cores = os.cpu_count() or 1
    eval_args = ["train.py", "--do_train=False", f"--pretrained_model={model}", *data_args(data), f"--output_dir={out}",
                 f"--eval_batch_size={args.eval_batch_size}", f"--num_beams={args.num_beams}", f"--max_eval_samples={args.rows}",
                 "--max_source_length=320", "--max_target_length=48", "--report_to=none", "--device=cpu"]
    shutil.rmtree(out, ignore_errors=True)
    if setup == "ranks":
        cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", out + "-log", *eval_args]
        threads = max(1, cores // 2)
    else:
        cmd = [sys.executable, *eval_args]
        threads = cores if setup == "one" else max(1, cores // 2)
    run(cmd, threads, f"evaluation ({setup})")
    with open(os.path.join(out, "run.log"), encoding="utf-8") as f:
        rows, seconds = EVAL_LINE.findall(f.read())[-1]
    return int(rows), float(seconds), threads


def same_files(a, b, names=("predictions_dev.jsonl", "eval_results.json")):
    return all(open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read() for n in names)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=CSL if os.path.isfile(CSL) else SAMPLE_DEV,
                        help="rows to evaluate (default: ../shared/data/csl/ts_dev.tsv when present, else the sample dev set)")
    parser.add_argument("--model", default="", help="a trained summarization output_dir or model dir; default: train one")
    parser.add_argument("--train_steps", type=int, default=60, help="steps of the model trained when --model is not given")
    parser.add_argument("--rows", type=int, default=0, help="evaluate only the first N rows (0 = all)")
    parser.add_argument("--eval_batch_size", type=int, default=32)
    parser.add_argument("--num_beams", type=int, default=1)
    parser.add_argument("--work_dir", default="", help="where models and outputs go (default: a temp dir, removed)")
    parser.add_argument("--output", default="", help="write the figures as JSON here")
    args = parser.parse_args(argv)

    work = args.work_dir or tempfile.mkdtemp(prefix="benchmark-eval-")
    os.makedirs(work, exist_ok=True)
    try:
        model = args.model or train_model(os.path.join(work, "model"), args.data, args.train_steps)
        labels = {"one": "1 process", "ranks": "2 ranks", "one_half": "1 process"}
        figures = {}
        load_before = os.getloadavg()[0]
        for setup in ("one", "ranks", "one_half"):
            rows, seconds, threads = evaluate(setup, model, args.data, os.path.join(work, setup), args)
            figures[setup] = {"rows": rows, "seconds": seconds, "rows_per_s": round(rows / max(seconds, 1e-9), 2),
                              "threads_per_process": threads}
            print(f"{labels[setup]:>10} x {threads} thread(s): {rows} rows in {seconds:.1f} s = {figures[setup]['rows_per_s']:.2f} rows/s",
                  flush=True)
        identical = {s: same_files(os.path.join(work, "one"), os.path.join(work, s)) for s in ("ranks", "one_half")}
        report = {"data": args.data, "model": model, "eval_batch_size": args.eval_batch_size, "num_beams": args.num_beams,
                  "cpu_count": os.cpu_count(), "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                  "setups": figures, "same_predictions_and_metrics_as_one_process": identical,
                  "two_ranks_over_one_process": round(figures["ranks"]["rows_per_s"] / figures["one"]["rows_per_s"], 3)}
        print(f"2 ranks / 1 process: {report['two_ranks_over_one_process']:.2f}x; identical predictions and metrics: "
              + ", ".join(f"{s}: {'yes' if v else 'NO'}" for s, v in identical.items())
              + f"; load average {report['load_average_before_after'][0]} -> {report['load_average_before_after'][1]}")
        if args.output:
            with open(args.output, "w", encoding="utf-8") as f:
                json.dump(report, f, indent=1)
        return report
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
