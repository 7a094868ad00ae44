"""Issue #6 scale-out: `python -m paddle.distributed.launch --nproc_per_node 2 train.py --device=cpu`.

On a CPU-only paddle the launcher sets PADDLE_DISTRI_BACKEND=gloo itself, so nothing beyond
--nproc_per_node is needed. Dropout is 0 here: per-rank dropout masks would make a 2-rank run
differ from one process with the same global batch.
"""
import json
import os
import shutil
import subprocess
import sys

from paddle_finetune.paths import PROJECT_ROOT
import pytest
from helpers import tiny_bart_arg
from paddle_finetune.checkpoints.files import RANK_RNG_FILE
from paddle_finetune.checkpoints.listing import list_checkpoints

ROOT = PROJECT_ROOT
DIGEST_ENTRY = os.path.join("tests", "param_digest_entry.py")  # every rank writes a checksum of its weights
TINY = tiny_bart_arg(dropout=0.0)  # ranks draw different dropout masks
PER_DEVICE = 4
MAX_STEPS = 6
BASE = [TINY, "--device=cpu", "--report_to=none", "--logging_steps=1", "--save_steps=3", "--save_total_limit=0",
        "--max_train_samples=40", "--max_eval_samples=2", "--eval_batch_size=2", "--max_source_length=48",
        "--max_target_length=8", f"--max_steps={MAX_STEPS}"]


def run(out, launch, batch, digest_dir, *extra):
    cmd = [sys.executable]
    if launch:
        cmd += ["-m", "paddle.distributed.launch", "--log_dir", str(out) + "-launch-log", "--nproc_per_node", "2"]
    cmd += [DIGEST_ENTRY, str(digest_dir), "train.py", f"--output_dir={out}", f"--train_batch_size={batch}", *BASE, *extra]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180, env=env)
    logs = ""
    if launch and os.path.isdir(str(out) + "-launch-log"):
        logs = "".join(open(os.path.join(str(out) + "-launch-log", n), errors="replace").read()[-3000:]
                       for n in sorted(os.listdir(str(out) + "-launch-log")) if n.startswith("workerlog"))
    assert result.returncode == 0, f"rc {result.returncode}\n" + result.stdout[-1500:] + result.stderr[-1500:] + logs
    return result, logs


def losses(out):
    with open(os.path.join(out, "train_log.jsonl"), encoding="utf-8") as f:
        return [r["loss"] for r in map(json.loads, f)]


def digests(directory):
    return {n: json.load(open(os.path.join(directory, n)))["sha256"] for n in sorted(os.listdir(directory))}


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    base = tmp_path_factory.mktemp("dp")
    result, logs = run(base / "out", True, PER_DEVICE, base / "digest")
    return base, result, logs


def test_two_cpu_ranks_end_with_identical_parameters(two_ranks):
    base, result, _ = two_ranks
    found = digests(base / "digest")
    assert sorted(found) == ["rank0.json", "rank1.json"]
    assert found["rank0.json"] == found["rank1.json"]
    assert "global batch 8 = 4 per device x 2 device(s)" in result.stdout  # the launcher echoes rank 0


def test_two_ranks_match_one_process_with_the_same_global_batch(two_ranks):
    base, _, _ = two_ranks
    run(base / "single", False, 2 * PER_DEVICE, base / "digest-single")
    dp, single = losses(base / "out"), losses(base / "single")
    assert len(dp) == len(single) == MAX_STEPS
    # Each rank averages over its own tokens and the gradients are averaged across ranks, while one
    # process averages over all tokens at once: close, not bit-equal.
    for a, b in zip(dp, single):
        assert abs(a - b) < 2e-3 * abs(b), (dp, single)  # measured: 2e-4


def test_only_rank_0_writes_and_evaluation_runs_once(two_ranks):
    base, _, _ = two_ranks
    out = base / "out"
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [3, 6]
    assert len((out / "predictions_dev.jsonl").read_text().splitlines()) == 2
    assert len((out / "train_log.jsonl").read_text().splitlines()) == MAX_STEPS
    assert [os.path.basename(p) for p in list_checkpoints(str(out))] == ["checkpoint-3", "checkpoint-6"]
    assert (out / "checkpoint-3" / RANK_RNG_FILE.format(rank=1)).is_file()
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_two_rank_resume_continues_exactly(two_ranks):
    base, _, _ = two_ranks
    resumed = base / "resumed"
    shutil.copytree(base / "out", resumed, ignore=lambda d, names: [n for n in names if n == "checkpoint-6"])
    run(resumed, True, PER_DEVICE, base / "digest-resumed", "--resume_from_checkpoint=auto")
    assert losses(resumed) == losses(base / "out")
    assert digests(base / "digest-resumed") == digests(base / "digest")
