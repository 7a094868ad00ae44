"""Seconds to score 1000 prediction/reference pairs in each rouge_style (evaluation.rouge.rouge_scores).

    python tools/benchmark_rouge.py              # the benchmark's sample pairs, and CSL pairs when ../shared/data/csl is there
    python tools/benchmark_rouge.py --repeats 9 --csl /data/csl/ts_dev.tsv

Pairs: "sample" are tools/benchmark.py's ROUGE pairs (a summary of the built-in sample against the next row's summary
plus 20 characters of its text); "csl" are CSL titles against the opening of their abstract (8-40 characters).
Each figure is the median of --repeats timed rounds after one untimed round (which also loads jieba's dictionary:
its one-time cost is printed apart).

Imports: the standard library; of the project `evaluation.rouge` and `paths`.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

from paddle_finetune.evaluation.rouge import ROUGE_STYLES, rouge_scores
from paddle_finetune.paths import PROJECT_ROOT

CSL = os.path.join(PROJECT_ROOT, "..", "shared", "data", "csl", "ts_dev.tsv")
SAMPLE = os.path.join(PROJECT_ROOT, "datasets", "sample_summarization", "train.jsonl")


def sample_pairs(n=1000):
    with open(SAMPLE, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    pairs = [(rows[i]["title"], rows[(i + 1) % len(rows)]["title"] + rows[i]["content"][:20]) for i in range(len(rows))]
    return (pairs * (n // len(pairs) + 1))[:n]


def csl_pairs(path=CSL, n=1000):
    rng = random.Random(0)
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(abstract[: rng.randint(8, 40)], title) for _, abstract, title in rows][:n]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--csl", default=CSL, help="CSL's ts_dev.tsv (default: ../shared/data/csl/ts_dev.tsv)")
    args = parser.parse_args(argv)
    sets = {"sample": sample_pairs()}
    if os.path.isfile(args.csl):
        sets["csl"] = csl_pairs(args.csl)
    for name, pairs in sets.items():
        preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
        for style in ROUGE_STYLES:
            started = time.perf_counter()
            rouge_scores(preds, refs, style)
            first = time.perf_counter() - started
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                scores = rouge_scores(preds, refs, style)
                times.append(time.perf_counter() - started)
            print(f"{name:6} {style:10} {len(pairs)} pairs: {statistics.median(times):.3f} s "
                  f"[{min(times):.3f}-{max(times):.3f}], first round {first:.3f} s; rougeL {scores['rougeL']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
