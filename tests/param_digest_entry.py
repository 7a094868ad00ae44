"""Test hook: run a trainer's entry point and, after training, have every rank write a checksum of its
weights, so a test can check that data-parallel ranks end with identical parameters.

    python [-m paddle.distributed.launch ...] tests/param_digest_entry.py DIGEST_DIR train.py --key=value ...

Each rank writes DIGEST_DIR/rank<N>.json with the sha256 of its weights (names and bytes, sorted by name).
"""
import hashlib
import json
import os
import runpy
import sys

import numpy as np

import train_utils
from paddle_finetune.models.weights import unwrap_model
from paddle_finetune.paths import PROJECT_ROOT
from paddle_finetune.runtime.distributed import get_rank


def write_param_digest(model, directory, rank):
    state = unwrap_model(model).state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump({"rank": rank, "sha256": digest.hexdigest()}, f)


def main():
    directory, script, *args = sys.argv[1:]
    run_training = train_utils.run_training

    def run_training_then_digest(task):
        state = run_training(task)
        write_param_digest(task.model, directory, get_rank())
        return state

    train_utils.run_training = run_training_then_digest  # the trainers call tu.run_training
    sys.argv = [script, *args]
    runpy.run_path(os.path.join(PROJECT_ROOT, script), run_name="__main__")


if __name__ == "__main__":
    main()
