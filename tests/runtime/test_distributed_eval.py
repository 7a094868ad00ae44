"""Issue #16, sharded evaluation: two CPU ranks (gloo, Paddle's own launcher) evaluate the same weights exactly as
one process does, for every trainer. Each trainer trains one tiny model once; then `--do_train=False
--pretrained_model=<that output_dir>` runs as one process with 2 math threads (this machine's cores) and as
2 ranks with 1 thread each, and every file they write is compared byte for byte (run.log and train_config.json,
which name their own output_dir, aside). All runs start at once, so their start-up overlaps.

A rank that takes longer than gloo's 30 s collective timeout over its share (measured on paddle 3.3.1: a gloo
all_reduce whose peer arrives 35 s late fails after 30.0 s with "TIMEOUT") still gathers: the outputs go
through the launcher's TCP store. To save a run, train_clm.py's two ranks run through tests/slow_rank_entry.py,
whose rank 1 sleeps 31 s in its first predict call: that run must still match one process.
"""
import os
import re

import pytest

from helpers import tiny_bart_arg
from launch_helpers import rows_per_rank, start_one, start_ranks, succeeded

TINY_BERT = ("--model_config={'hidden_size': 32, 'num_hidden_layers': 1, 'num_attention_heads': 2, "
             "'intermediate_size': 64, 'max_position_embeddings': 128}")
SLOW_SECONDS = 31  # > gloo's 30 s
SLOW_SCRIPT = "train_clm.py"  # its two ranks run through tests/slow_rank_entry.py
SUM_DATA = ["--dev_file=datasets/sample_summarization/dev.jsonl", "--test_file=datasets/sample_summarization/test.jsonl"]
# trainer -> (training arguments, evaluation arguments, eval_batch_size)
TRAINERS = {
    "train.py": ([tiny_bart_arg(), "--max_steps=30", "--max_train_samples=400", "--train_batch_size=16",
                  "--max_source_length=64", "--max_target_length=16"],
                 ["--max_source_length=64", "--max_target_length=16", *SUM_DATA], 8),
    "train_classification.py": ([TINY_BERT, "--max_steps=20", "--max_train_samples=400", "--max_seq_length=64"],
                                ["--max_seq_length=64"], 16),
    "train_mlm.py": ([TINY_BERT, "--max_steps=10", "--max_train_samples=400", "--probe_text="], ["--probe_text="], 16),
    "train_clm.py": ([TINY_BERT, "--max_steps=10", "--max_train_samples=400", "--sample_max_new_tokens=10"],
                     ["--sample_max_new_tokens=10"], 4),
}
COMMON = ["--device=cpu", "--report_to=none"]
OWN_OUTPUT_DIR = {"run.log", "train_config.json", ".paddle_finetune_owned.json"}  # name the run's own output_dir (or run)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("trained")
    jobs = {}
    for script, (train_args, _, _) in TRAINERS.items():
        steps = next(a for a in train_args if a.startswith("--max_steps=")).split("=")[1]
        jobs[script] = start_one([script, f"--output_dir={base / script}", *COMMON, *train_args, f"--save_steps={steps}"])
    for job in jobs.values():
        succeeded(job.finish())
    return base


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    """{script: (one process's output_dir, two ranks' output_dir, their worker logs)}."""
    base = tmp_path_factory.mktemp("evaluated")

    def args(script, out):
        _, eval_args, batch = TRAINERS[script]
        return [script, "--do_train=False", f"--pretrained_model={trained / script}", f"--output_dir={out}",
                f"--eval_batch_size={batch}", *COMMON, *eval_args]

    jobs = {}
    for script in sorted(TRAINERS, key=lambda s: s != SLOW_SCRIPT):  # the slow run first: it takes longest
        hook = ["tests/slow_rank_entry.py", "1", str(SLOW_SECONDS)] if script == SLOW_SCRIPT else []
        jobs[script] = (start_one(args(script, base / f"{script}-one")),
                        start_ranks(hook + args(script, base / f"{script}-two"), base / f"{script}-two-log"))
    results = {}
    for script, (one, two) in jobs.items():
        succeeded(one.finish())
        results[script] = (base / f"{script}-one", base / f"{script}-two", succeeded(two.finish())[2])
    return results


def files(directory):
    return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory)) if n not in OWN_OUTPUT_DIR}


def assert_same_files(one, two):
    a, b = files(one), files(two)
    assert sorted(a) == sorted(b)
    different = [n for n in a if a[n] != b[n]]
    assert not different, {n: (a[n][:300], b[n][:300]) for n in different}


@pytest.mark.parametrize("script", list(TRAINERS))
def test_two_ranks_write_what_one_process_writes(evaluated, script):
    one, two, _ = evaluated[script]
    names = set(files(one))
    assert {"metrics.jsonl", "all_results.json", "eval_results.json"} <= names
    if script in ("train.py", "train_classification.py"):
        assert "predictions_dev.jsonl" in names
    if script == "train.py":
        assert "predictions_test.jsonl" in names
    assert_same_files(one, two)


@pytest.mark.parametrize("script", list(TRAINERS))
def test_each_rank_evaluates_about_half_and_the_main_log_times_it(evaluated, script):
    _, two, logs = evaluated[script]
    batch = TRAINERS[script][2]
    shares, totals = rows_per_rank(logs)
    assert shares and set(shares) <= {"dev", "test"}
    for split, by_rank in shares.items():
        assert sorted(by_rank) == [0, 1] and sum(by_rank.values()) == totals[split]
        # rows are dealt within one row of equal (a batch is cut between the ranks when whole ones cannot be)
        assert abs(by_rank[0] - by_rank[1]) <= 1, (split, by_rank, batch)
        assert re.search(rf"eval {split}: {totals[split]} rows in \d+\.\d s on 2 ranks", (two / "run.log").read_text())


def test_a_rank_slower_than_gloos_timeout_still_gathers(evaluated):
    one, slow, logs = evaluated[SLOW_SCRIPT]
    assert f"rank 1: sleeping {SLOW_SECONDS} s in predict" in logs["workerlog.1"]
    seconds = float(re.search(r"eval dev: \d+ rows in (\d+\.\d) s on 2 ranks", (slow / "run.log").read_text()).group(1))
    assert seconds >= SLOW_SECONDS  # rank 0 waited that long for rank 1's outputs
    assert_same_files(one, slow)
