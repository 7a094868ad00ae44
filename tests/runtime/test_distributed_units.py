"""Issue #16 in one process: the pure decisions behind the multi-node start-up check (who writes whose
output_dir), the cross-rank agreement messages, a node writer's claim of its own output_dir, and the digest
that tells two nodes' copies of a checkpoint apart. The real multi-process runs are in
test_distributed_multinode.py and test_distributed_eval.py."""
import os
import shutil

import pytest

from checkpoint_helpers import save_tiny_checkpoint
from paddle_finetune.checkpoints.files import LOCK_FILE, SAFE_WEIGHTS_FILE
from paddle_finetune.checkpoints.output_dir import claim_node_output_dir
from paddle_finetune.checkpoints.storage import CheckpointContents, read_checkpoint, training_state_digest
from paddle_finetune.errors import ConfigError
from paddle_finetune.training.session import Run
from paddle_finetune.runtime.distributed import first_error, node_leader
from paddle_finetune.runtime.multinode import check_output_dir_sharing, check_round, check_same_across_ranks, describe_writers, sharing_problem, short_fingerprint, writers_for


def test_node_leader_is_the_first_rank_of_the_node():
    # the launcher numbers node n's ranks offset_n + local rank
    assert [node_leader(r, r % 4) for r in range(8)] == [0, 0, 0, 0, 4, 4, 4, 4]


def test_a_shared_disk_leaves_rank_0_the_only_writer():
    assert writers_for([True] * 4, [0, 0, 2, 2]) == [0, 0, 0, 0]


def test_a_node_without_rank_0s_output_dir_gets_its_first_rank_as_writer():
    assert writers_for([True, True, False, False], [0, 0, 2, 2]) == [0, 0, 2, 2]
    assert describe_writers([0, 0, 2, 2]) == "rank 0 for ranks 0, 1; rank 2 for ranks 2, 3"


def test_ranks_of_one_node_that_disagree_are_refused():
    with pytest.raises(ConfigError, match=r"ranks 2 and 3 run on the same node, but only rank 2 sees rank 0's output_dir"):
        writers_for([True, True, True, False], [0, 0, 2, 2])


def test_every_rank_must_see_exactly_its_writers_copy():
    writer_of = [0, 0, 2, 2, 4, 4]
    assert sharing_problem([[0], [0], [2], [2], [4], [4]], writer_of) is None
    # nodes 2 and 4 share a disk that node 0 does not see
    assert "rank 2 sees the output_dir of rank 4" in sharing_problem([[0], [0], [2, 4], [2, 4], [2, 4], [2, 4]], writer_of)
    assert "rank 3 does not see the output_dir its node's rank 2 writes" in sharing_problem([[0], [0], [2], [], [4], [4]], writer_of)


def test_values_that_differ_across_ranks_name_the_first_rank():
    check_same_across_ranks(["a", "a"], "x", "fix it")
    with pytest.raises(ConfigError, match=r"^x differs between rank 0 \(a\) and rank 2 \(b\): fix it$"):
        check_same_across_ranks(["a", "a", "b", "c"], "x", "fix it")
    assert short_fingerprint("sha256:" + "ab" * 32 + " (40 features)") == "sha256:abababababab (40 features)"
    assert first_error([None, None, "bad", "worse"]) == (2, "bad")
    assert first_error([None, None]) is None


def test_one_process_round_sees_its_own_file_and_leaves_nothing(tmp_path):
    assert check_round(str(tmp_path), [0]) == [[0]]
    assert os.listdir(tmp_path) == []
    assert check_output_dir_sharing({"output_dir": str(tmp_path)}) == [0]  # one process: no check at all


def test_a_node_writer_claims_its_own_output_dir_and_a_refused_run_undoes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    out = tmp_path / "node1" / "out"
    config = {"output_dir": str(out)}
    with pytest.raises(RuntimeError):
        with Run(config):  # rank 1: no claim here, as in run_main
            assert not out.exists()
            claim_node_output_dir(config)  # the start-up check found it is this node's writer
            assert (out / LOCK_FILE).read_text().strip() == str(os.getpid())
            raise RuntimeError("refused later")
    assert not (tmp_path / "node1").exists()


def test_a_node_writer_refuses_a_used_output_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    (tmp_path / "old.txt").write_text("a previous run")
    with Run({"output_dir": str(tmp_path)}):
        with pytest.raises(ConfigError, match=r"holds files no paddle-finetune run wrote \(old.txt\); nothing was changed"):
            claim_node_output_dir({"output_dir": str(tmp_path)})
    assert os.listdir(tmp_path) == ["old.txt"]


def test_state_digest_tells_checkpoints_apart_but_not_their_tokenizer_files(tmp_path):
    path = save_tiny_checkpoint(str(tmp_path / "a"), 4)
    copy = str(tmp_path / "b" / "checkpoint-4")
    shutil.copytree(path, copy)
    contents = read_checkpoint(path)
    digest = training_state_digest(contents)
    assert training_state_digest(read_checkpoint(copy)) == digest
    elsewhere = {**contents.files, "tokenizer_config.json": {"size": 1, "sha256": "0" * 64}}
    assert training_state_digest(CheckpointContents(**{**vars(contents), "files": elsewhere})) == digest
    moved = {**contents.files, SAFE_WEIGHTS_FILE: {"size": 1, "sha256": "1" * 64}}
    assert training_state_digest(CheckpointContents(**{**vars(contents), "files": moved})) != digest
    later = CheckpointContents(**{**vars(contents), "step": 5})
    assert training_state_digest(later) != digest


THREADS_PROBE = """
import numpy as np
from paddle_finetune.runtime.environment import evaluation_math, set_math_threads, setup_device
setup_device("cpu")
import paddle
rng = np.random.default_rng(0)
same = []
for m, k, n in [(183, 1024, 21133), (74, 1024, 20806), (96, 1024, 5747), (35, 1024, 21210)]:  # differed across thread counts
    a, b = (paddle.to_tensor(rng.standard_normal(s).astype("float32")) for s in ((m, k), (k, n)))
    out = []
    for threads in (1, 2):  # a rank with one core, and one process with two
        set_math_threads(threads)
        with evaluation_math():
            out.append(paddle.matmul(a, b).numpy())
    same.append(bool(np.array_equal(*out)))
print(same)
"""


def test_evaluation_matrix_products_do_not_depend_on_the_thread_count():
    import subprocess
    import sys

    from helpers import ROOT
    from launch_helpers import run_env

    env = run_env()
    env.pop("MKL_CBWR", None)
    env["OMP_NUM_THREADS"] = "2"
    result = subprocess.run([sys.executable, "-c", THREADS_PROBE.format(root=ROOT)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[True, True, True, True]"


def test_benchmark_eval_help():
    import subprocess
    import sys

    from helpers import ROOT

    result = subprocess.run([sys.executable, "tools/benchmark_eval.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--eval_batch_size" in result.stdout and "--model" in result.stdout
