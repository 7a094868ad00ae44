"""Issue #22: data parallel at any size. `python -m paddle.distributed.launch --nproc_per_node 2 train.py` on 200 rows
with train_batch_size=8 crashed at step 4 (an empty micro-batch on rank 1, then a gloo timeout). Here the most
awkward size there is -- 209 rows, so each epoch's short global batch has 1 row for 2 ranks -- with gradient
accumulation 2, over two whole epochs, trains to the end on two real CPU ranks; the property over every size is
tests/data/test_batching.py."""
from helpers import read_jsonl, tiny_bart_arg
from launch_helpers import start_ranks, succeeded

ROWS, PER_DEVICE, ACCUMULATION, EPOCHS = 209, 8, 2, 2
MICRO_PER_EPOCH = -(-ROWS // (PER_DEVICE * 2))  # 14 global batches, the last of 1 row
STEPS_PER_EPOCH = -(-MICRO_PER_EPOCH // ACCUMULATION)  # 7


def test_two_ranks_train_an_awkward_size_with_accumulation_to_the_end(tmp_path):
    out = tmp_path / "out"
    _, _, logs = succeeded(start_ranks(
        ["train.py", f"--output_dir={out}", tiny_bart_arg(dropout=0.0), "--device=cpu", "--report_to=none",
         f"--max_train_samples={ROWS}", f"--train_batch_size={PER_DEVICE}", f"--gradient_accumulation_steps={ACCUMULATION}",
         f"--num_train_epochs={EPOCHS}", "--max_steps=-1", f"--save_steps={STEPS_PER_EPOCH}", "--logging_steps=1",
         "--max_eval_samples=3", "--eval_batch_size=2", "--max_source_length=48", "--max_target_length=8"],
        tmp_path / "log").finish(timeout=600))
    run_log = (out / "run.log").read_text(encoding="utf-8")
    assert (f"training: {ROWS} examples, {EPOCHS * STEPS_PER_EPOCH} steps ({STEPS_PER_EPOCH} per epoch), global batch 32 = "
            f"{PER_DEVICE} per device x 2 device(s) x {ACCUMULATION} accumulation") in run_log
    assert ("data parallel: 209 rows in 14 global batches of up to 16; the short one (1 row) is shared out across the "
            "2 ranks; it has fewer rows than ranks, so 1 row(s) from the epoch's start are seen twice per epoch") in run_log
    steps = [r["step"] for r in read_jsonl(out / "train_log.jsonl")]
    assert steps == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [7, 14]
    # 3 dev rows on 2 ranks: 2 and 1, every evaluation
    shares = [line for text in logs.values() for line in text.splitlines() if "evaluated" in line and "dev rows" in line]
    assert sorted(set(shares)) == ["rank 0: evaluated 2 of 3 dev rows", "rank 1: evaluated 1 of 3 dev rows"]
