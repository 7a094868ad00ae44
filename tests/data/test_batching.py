"""batching.py: length-grouped batches, the split across ranks, reproducible per epoch; and the rule of issue #22:
every rank a non-empty micro-batch at every step, every row once per epoch (or counted in the log)."""
from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from paddle_finetune.data.batching import (
    describe_plan,
    epoch_batches,
    epoch_plan,
    global_batches,
    length_grouped_batches,
    shuffled_batches,
)


def test_length_grouped_batches_cover_everything_once_and_pad_little():
    rng = np.random.RandomState(0)
    lengths = list(rng.randint(5, 400, size=1000))
    batches = length_grouped_batches(lengths, 16, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # an OOM shows on the first step
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_padded = sum(len(b) * max(lengths[i] for i in b) for b in shuffled_batches(1000, 16, 1, 0))
    assert padded < 0.7 * random_padded
    assert length_grouped_batches(lengths, 16, 1, 0) == batches  # deterministic for resume
    assert length_grouped_batches(lengths, 16, 1, 1) != batches  # reshuffled every epoch


def test_ranks_split_the_global_batch_of_a_single_process():
    lengths = list(range(1, 102))
    single = epoch_batches(lengths, 8, world_size=1, rank=0, seed=3, epoch=0)
    r0 = epoch_batches(lengths, 4, world_size=2, rank=0, seed=3, epoch=0)
    r1 = epoch_batches(lengths, 4, world_size=2, rank=1, seed=3, epoch=0)
    assert len(r0) == len(r1) == len(single)
    for s, a, b in zip(single, r0, r1):  # the short batch too: its 5 rows are shared 3 + 2, none repeated
        assert sorted(s) == sorted(a + b) and not set(a) & set(b)


def test_the_reported_cases_never_give_a_rank_an_empty_batch():
    """200 rows, batch 8 on 2 ranks crashed at step 4; 1000 rows, batch 16 at index 25 (the short batch had been
    shuffled away from the end, where the old code completed it)."""
    for rows, per_device in ((200, 8), (1000, 16), (201, 8)):
        lengths = list(np.random.RandomState(rows).randint(5, 300, size=rows))
        for epoch in range(3):
            ranks = [epoch_batches(lengths, per_device, 2, rank, 42, epoch) for rank in range(2)]
            assert len(ranks[0]) == len(ranks[1])
            assert all(batch for rank in ranks for batch in rank)


def _check_epoch(n, per_device, world_size, seed, epoch, group):
    lengths = list(np.random.RandomState(seed % 1000).randint(1, 50, size=n))
    ranks = [epoch_batches(lengths, per_device, world_size, rank, seed, epoch, group) for rank in range(world_size)]
    plan = epoch_plan(n, per_device, world_size)
    # every rank the same number of micro-batches, the plan's, and never an empty one
    assert {len(r) for r in ranks} == {plan.micro_batches}
    assert all(0 < len(b) <= per_device for r in ranks for b in r)
    # every row once per epoch, apart from the rows the plan reports as repeated
    seen = Counter(int(i) for r in ranks for b in r for i in b)
    assert set(seen) == set(range(n))
    assert sum(seen.values()) - n == plan.repeated_rows
    # each step's rows across ranks are one global batch: what one process with the global batch size sees
    single = global_batches(lengths, per_device * world_size, seed, epoch, group)
    for step, batch in enumerate(single):
        parts = [r[step] for r in ranks]
        assert set(batch) <= {i for p in parts for i in p}
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    # the same on every call: a resume gets the same batches
    assert epoch_batches(lengths, per_device, world_size, world_size - 1, seed, epoch, group) == ranks[-1]
    return plan


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 400), per_device=st.integers(1, 16), world_size=st.integers(1, 8),
       seed=st.integers(0, 2**31), epoch=st.integers(0, 5), group=st.booleans())
def test_any_size_gives_every_rank_a_row_at_every_step_and_every_row_once(n, per_device, world_size, seed, epoch, group):
    _check_epoch(n, per_device, world_size, seed, epoch, group)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 300), per_device=st.integers(1, 8), world_size=st.integers(2, 4),
       accumulation=st.integers(2, 5), seed=st.integers(0, 1000))
def test_gradient_accumulation_across_ranks_keeps_every_rank_in_step(n, per_device, world_size, accumulation, seed):
    """The loop's stream with accumulation: micro-batches run on across the epoch's end, so every optimizer step
    takes `accumulation` non-empty micro-batches on every rank, whatever the epoch's length."""
    lengths = list(range(1, n + 1))

    def stream(rank):
        epoch = 0
        while True:
            yield from epoch_batches(lengths, per_device, world_size, rank, seed, epoch)
            epoch += 1

    streams = [stream(rank) for rank in range(world_size)]
    micro_per_epoch = epoch_plan(n, per_device, world_size).micro_batches
    steps = -(-2 * micro_per_epoch // accumulation)  # two epochs' worth
    for _ in range(steps):
        for _ in range(accumulation):
            batches = [next(s) for s in streams]
            assert all(batches)


def test_the_log_says_how_a_short_batch_is_shared_and_counts_repeats():
    assert epoch_plan(200, 8, 2) == (13, 8, 0)  # 200 = 12 x 16 + 8
    assert describe_plan(epoch_plan(200, 8, 2), 200, 8, 2).endswith("every row seen once per epoch")
    assert epoch_plan(201, 8, 2) == (13, 9, 0)
    assert epoch_plan(17, 8, 2) == (2, 1, 1)
    assert epoch_plan(3, 4, 8) == (1, 3, 5)
    assert "1 row(s) from the epoch's start are seen twice" in describe_plan(epoch_plan(17, 8, 2), 17, 8, 2)
    assert describe_plan(epoch_plan(100, 8, 1), 100, 8, 1) is None
    assert describe_plan(epoch_plan(32, 8, 2), 32, 8, 2) is None  # no short batch
