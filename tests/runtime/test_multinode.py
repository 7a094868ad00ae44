"""Issue #16, multi-node without a shared filesystem, simulated on one machine: two launcher invocations,
`python -m paddle.distributed.launch --master 127.0.0.1:<port> --rank N --nnodes 2 --nproc_per_node 1 train.py
--output_dir=<A or B>`, started together. Each "node" is a launcher of its own (its own PADDLE_LOCAL_RANK 0,
rendezvous through the master, ranks 0 and 1 over gloo, as on two machines) and sees only its own output_dir,
which is what a node without a shared disk sees. Two real machines would differ only in the network.

Each node's first rank writes complete checkpoints and the final model on its own "disk"; resume=auto on
both continues exactly; nodes that would resume different checkpoints, read different data, or whose
output_dir is in use are refused with one line and leave every output_dir as it was.
"""
import json
import os
import shutil

import pytest
from helpers import read_jsonl, tiny_bart_arg
from launch_helpers import free_port, start_node, succeeded
from paddle_finetune.checkpoints.files import RANK_RNG_FILE
from paddle_finetune.checkpoints.listing import list_checkpoints
from paddle_finetune.checkpoints.storage import read_checkpoint, training_state_digest

BASE = ["train.py", tiny_bart_arg(dropout=0.1), "--device=cpu", "--report_to=none", "--logging_steps=1", "--save_steps=3",
        "--save_total_limit=0", "--max_train_samples=40", "--max_eval_samples=4", "--eval_batch_size=2",
        "--max_source_length=48", "--max_target_length=8", "--train_batch_size=4", "--max_steps=6"]
ROOT_ONLY = {"train_log.jsonl", "metrics.jsonl", "predictions_dev.jsonl", "all_results.json", "run.log"}  # rank 0's node


def start_two_nodes(base, tag, extra=((), ())):
    """Node 0 writes base/<tag>-A, node 1 base/<tag>-B; returns their jobs."""
    master = f"127.0.0.1:{free_port()}"
    return [start_node([*BASE, f"--output_dir={base / f'{tag}-{name}'}", *more], base / f"{tag}-log{name}", master, node)
            for node, (name, more) in enumerate(zip("AB", extra))]


def snapshot(directory):
    if not os.path.exists(directory):
        return None
    return {os.path.relpath(os.path.join(d, f), directory): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(directory) for f in names}


def copy_without(src, dst, *names):
    shutil.copytree(src, dst, ignore=lambda d, found: [n for n in found if n in names])


def one_error_line(result):
    """The refusal each rank printed: exactly one `error:` line in its worker log."""
    code, _, logs = result
    assert code != 0
    (log,) = logs.values()
    lines = [line for line in log.splitlines() if "error: " in line]
    assert len(lines) == 1, log[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    base = tmp_path_factory.mktemp("nodes")
    results = [succeeded(job.finish()) for job in start_two_nodes(base, "full")]
    return base, results


@pytest.fixture(scope="module")
def after_full(full):
    """The runs that start from the full run's directories, all at once: a resume, and three refusals."""
    base, _ = full
    for name in "AB":  # as a crash after checkpoint-3 leaves them
        copy_without(base / f"full-{name}", base / f"resume-{name}", "checkpoint-6")
    copy_without(base / "full-A", base / "differ-A")  # A has checkpoint-6, B not
    copy_without(base / "full-B", base / "differ-B", "checkpoint-6")
    copy_without(base / "full-B", base / "used-B")  # B holds a previous run; A is new
    before = {tag: {n: snapshot(base / f"{tag}-{n}") for n in "AB"} for tag in ("differ", "used", "data")}
    auto = ["--resume_from_checkpoint=auto"]
    jobs = {"resume": start_two_nodes(base, "resume", (auto, auto)),
            "differ": start_two_nodes(base, "differ", (auto, auto)),
            "used": start_two_nodes(base, "used"),
            "data": start_two_nodes(base, "data", ((), ["--max_train_samples=39"]))}
    return base, before, {tag: [job.finish() for job in pair] for tag, pair in jobs.items()}


def test_each_node_writes_complete_checkpoints_and_the_final_model(full):
    base, results = full
    a, b = base / "full-A", base / "full-B"
    for out in (a, b):
        assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint-3", "checkpoint-6"]
        assert not [n for n in os.listdir(out) if n.startswith((".tmp-", ".fs-check-", ".lock"))]
    for step in (3, 6):
        ca, cb = (read_checkpoint(str(out / f"checkpoint-{step}")) for out in (a, b))
        assert set(cb.rank_rng) == {1}  # rank 1's RNG reached node 1's own checkpoint (and node 0's)
        # the same checkpoint on both disks: train_config.json differs only by output_dir, as the test names two
        assert {n: e for n, e in ca.files.items() if n != "train_config.json"} == {n: e for n, e in cb.files.items() if n != "train_config.json"}
        assert {k: v for k, v in ca.config.items() if k != "output_dir"} == {k: v for k, v in cb.config.items() if k != "output_dir"}
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert json.loads((a / "trainer_state.json").read_text()) == json.loads((b / "trainer_state.json").read_text())
    assert ROOT_ONLY <= set(os.listdir(a)) and not ROOT_ONLY & set(os.listdir(b))
    assert "is not one shared directory (rank 1 cannot see rank 0's)" in (a / "run.log").read_text()
    (node1_log,) = results[1][2].values()
    assert f"rank 1: writing this node's checkpoints and final model into {b}" in node1_log


def test_resume_auto_on_both_nodes_continues_exactly(full, after_full):
    base, _, runs = after_full
    for result in runs["resume"]:
        succeeded(result)
    resumed, uninterrupted = read_jsonl(base / "resume-A" / "train_log.jsonl"), read_jsonl(base / "full-A" / "train_log.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for r, u in zip(resumed, uninterrupted):
        assert abs(r["loss"] - u["loss"]) <= 1e-5, (resumed, uninterrupted)
    assert "resumed from" in (base / "resume-A" / "run.log").read_text()
    for name in "AB":
        again = read_checkpoint(str(base / f"resume-{name}" / "checkpoint-6"))
        first = read_checkpoint(str(base / f"full-{name}" / "checkpoint-6"))
        assert training_state_digest(again) == training_state_digest(first)
        assert again.trainer_state["rng"] == first.trainer_state["rng"]  # rank 0's, as JSON
        rank1 = RANK_RNG_FILE.format(rank=1)
        assert (base / f"resume-{name}" / "checkpoint-6" / rank1).read_bytes() == (base / f"full-{name}" / "checkpoint-6" / rank1).read_bytes()


def test_nodes_that_would_resume_different_checkpoints_are_refused(after_full):
    base, before, runs = after_full
    for result in runs["differ"]:
        line = one_error_line(result)
        assert "rank 0 resumes from checkpoint-6" in line and "rank 1 from checkpoint-3" in line
    assert {n: snapshot(base / f"differ-{n}") for n in "AB"} == before["differ"]


def test_an_output_dir_in_use_on_another_node_is_refused_and_nothing_remains(after_full):
    base, before, runs = after_full
    for result in runs["used"]:
        line = one_error_line(result)
        assert f"rank 1: output_dir {base / 'used-B'} is not empty" in line
    assert {n: snapshot(base / f"used-{n}") for n in "AB"} == before["used"]
    assert before["used"]["A"] is None  # created by rank 0's claim, removed again


def test_nodes_that_read_different_data_are_refused(after_full):
    base, before, runs = after_full
    for result in runs["data"]:
        line = one_error_line(result)
        assert "the tokenized train data differs between rank 0" in line and "(39 features)" in line
    assert {n: snapshot(base / f"data-{n}") for n in "AB"} == before["data"]
