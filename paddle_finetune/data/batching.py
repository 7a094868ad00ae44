"""The order training examples are seen in: length-grouped (or shuffled) batches of the global
size, split across ranks, reproducible from (seed, epoch) so a resumed run continues mid-epoch
with exactly the batches it would have had, and per-batch randomness (e.g. MLM masking) that a
resume reproduces too.

Imports: numpy, and paddle inside to_tensors; nothing of the project.
"""
import numpy as np


def length_grouped_batches(lengths, batch_size, seed, epoch, group_batches=50):
    """Shuffle, then sort inside windows of `group_batches` batches so each batch holds similar lengths.

    Dynamic padding then pads each batch only to its own longest item. The window keeps
    batches random across the epoch; the longest batch goes first so an OOM shows at once.
    """
    rng = np.random.RandomState((seed * 1000003 + epoch) % (2**32))
    order = rng.permutation(len(lengths))
    window = batch_size * group_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def shuffled_batches(n, batch_size, seed, epoch):
    rng = np.random.RandomState((seed * 1000003 + epoch) % (2**32))
    order = rng.permutation(n)
    return [list(order[i:i + batch_size]) for i in range(0, n, batch_size)]


def epoch_batches(lengths, per_device_batch_size, world_size, rank, seed, epoch, group_by_length=True):
    """This rank's micro-batches for one epoch.

    Batches are formed at the *global* size and then split across ranks, so N ranks see
    exactly the batches one process with an N-times larger batch would see. A short last
    batch is completed from the epoch's start, so every rank runs the same number of steps.
    """
    global_size = per_device_batch_size * world_size
    if group_by_length:
        batches = length_grouped_batches(lengths, global_size, seed, epoch)
    else:
        batches = shuffled_batches(len(lengths), global_size, seed, epoch)
    if world_size > 1 and len(batches[-1]) < global_size:
        batches[-1] = list(batches[-1]) + [i for b in batches for i in b][: global_size - len(batches[-1])]
    return [list(b[rank * per_device_batch_size:(rank + 1) * per_device_batch_size]) for b in batches]


def batch_rng(seed, epoch, index):
    """Per-batch randomness (e.g. MLM masking) that a resume reproduces exactly."""
    return np.random.RandomState((seed * 7919 + epoch * 104729 + index) % (2**32))


def to_tensors(batch):
    import paddle

    return {k: paddle.to_tensor(v) for k, v in batch.items()}
