"""batching.py: length-grouped batches, the split across ranks, reproducible per epoch."""
import numpy as np

from paddle_finetune.data.batching import epoch_batches, length_grouped_batches, shuffled_batches


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
    for s, a, b in zip(single[:-1], r0, r1):
        assert sorted(s) == sorted(a + b) and not set(a) & set(b)
    assert len(r0[-1]) == len(r1[-1]) == 4  # the short last batch is completed so ranks stay in step
