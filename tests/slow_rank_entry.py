"""Test hook: run a trainer's entry point with one rank much slower in its first evaluation batch, as a rank
whose share of a long evaluation takes longer than the others'.

    python -m paddle.distributed.launch ... tests/slow_rank_entry.py RANK SECONDS train.py --key=value ...

Rank RANK sleeps SECONDS inside its first predict call; the others finish their share and wait for it
(longer than gloo's 30 s collective timeout when SECONDS > 30).
"""
import os
import runpy
import sys
import time

from paddle_finetune.paths import PROJECT_ROOT
from paddle_finetune.runtime.distributed import get_rank
from paddle_finetune.training import evaluate_only


def main():
    slow_rank, seconds, script, *args = sys.argv[1:]
    evaluate_split = evaluate_only.evaluate_split
    slept = []

    def slow_predict(predict_fn):
        def predict(model, split, unit, rows):
            if get_rank() == int(slow_rank) and not slept:
                slept.append(True)
                print(f"rank {get_rank()}: sleeping {seconds} s in predict", flush=True)
                time.sleep(float(seconds))
            return predict_fn(model, split, unit, rows)
        return predict

    def slow_evaluate_split(model, split, units, predict_fn, *rest, **kwargs):
        return evaluate_split(model, split, units, slow_predict(predict_fn), *rest, **kwargs)

    evaluate_only.evaluate_split = slow_evaluate_split  # where the engine looks it up
    sys.argv = [script, *args]
    runpy.run_path(os.path.join(PROJECT_ROOT, script), run_name="__main__")


if __name__ == "__main__":
    main()
