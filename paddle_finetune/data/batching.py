"""The order training examples are seen in: length-grouped (or shuffled) batches of the global
size, split across ranks, reproducible from (seed, epoch) so a resumed run continues mid-epoch
with exactly the batches it would have had, and per-batch randomness (e.g. MLM masking) that a
resume reproduces too.

The rule the split across ranks keeps, for any row count, batch size, world size, seed and
group_by_length: every rank gets a non-empty micro-batch at every step (data-parallel ranks run in
lockstep, and an empty batch has nothing to collate), and every row is seen once per epoch. The one
exception is a global batch with fewer rows than ranks: it is completed with rows from the epoch's
start, and `epoch_plan` says how many, for the log.

Imports: numpy, and paddle inside to_tensors; nothing of the project.
"""
from typing import NamedTuple

import numpy as np


def _epoch_rng(seed, epoch):
    return np.random.RandomState((seed * 1000003 + epoch) % (2**32))


def length_grouped_batches(lengths, batch_size, seed, epoch, group_batches=50):
    """Shuffle, then sort inside windows of `group_batches` batches so each batch holds similar lengths.

    Dynamic padding then pads each batch only to its own longest item. The window keeps
    batches random across the epoch; the longest batch goes first so an OOM shows at once.
    The one short batch (when the rows do not divide evenly) may land anywhere in the epoch.
    """
    rng = _epoch_rng(seed, epoch)
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
    order = _epoch_rng(seed, epoch).permutation(n)
    return [list(order[i:i + batch_size]) for i in range(0, n, batch_size)]


def split_across_ranks(batch, world_size, filler):
    """One global batch as world_size non-empty parts, rank 0's first: contiguous, sizes differing by at most one
    (a full batch gives every rank per_device rows). A batch with fewer rows than ranks is first completed from
    `filler` (the epoch's order, cycled), so every rank has a row."""
    rows = list(batch)
    if len(rows) < world_size:
        need = world_size - len(rows)
        rows += [filler[i % len(filler)] for i in range(need)]
    base, extra = divmod(len(rows), world_size)
    parts, start = [], 0
    for rank in range(world_size):
        stop = start + base + (1 if rank < extra else 0)
        parts.append(rows[start:stop])
        start = stop
    return parts


def global_batches(lengths, global_size, seed, epoch, group_by_length=True):
    """The epoch's batches of the global size (the last, or with group_by_length one anywhere, may be short)."""
    if not len(lengths):
        return []
    if group_by_length:
        return length_grouped_batches(lengths, global_size, seed, epoch)
    return shuffled_batches(len(lengths), global_size, seed, epoch)


def epoch_batches(lengths, per_device_batch_size, world_size, rank, seed, epoch, group_by_length=True):
    """This rank's micro-batches for one epoch.

    Batches are formed at the *global* size and then split across ranks, so N ranks see
    exactly the rows one process with an N-times larger batch would see in each step. A short
    global batch is shared out evenly (every rank at least one row), so every rank runs the same
    number of steps and none ever gets an empty batch.
    """
    batches = global_batches(lengths, per_device_batch_size * world_size, seed, epoch, group_by_length)
    if world_size == 1:
        return [list(b) for b in batches]
    filler = [i for b in batches for i in b]
    return [[int(i) for i in split_across_ranks(b, world_size, filler)[rank]] for b in batches]


class EpochPlan(NamedTuple):
    """How an epoch's rows are cut into steps across ranks: micro-batches per epoch (every rank the same), the
    rows of the short global batch (0 when none), and the rows seen twice to give every rank a row."""

    micro_batches: int
    short_batch_rows: int
    repeated_rows: int


def epoch_plan(num_rows, per_device_batch_size, world_size):
    """The EpochPlan of any epoch (it depends on the counts only, not on seed, epoch or lengths)."""
    global_size = per_device_batch_size * world_size
    short = num_rows % global_size
    micro = -(-num_rows // global_size)
    return EpochPlan(micro, short, world_size - short if 0 < short < world_size else 0)


def describe_plan(plan, num_rows, per_device_batch_size, world_size):
    """One log line on the epoch's layout when it is not plain (a short batch on several ranks), else None."""
    if world_size == 1 or not plan.short_batch_rows:
        return None
    line = (f"data parallel: {num_rows} rows in {plan.micro_batches} global batches of up to "
            f"{per_device_batch_size * world_size}; the short one ({plan.short_batch_rows} row"
            f"{'s' if plan.short_batch_rows != 1 else ''}) is shared out "
            f"across the {world_size} ranks")
    if plan.repeated_rows:
        line += (f"; it has fewer rows than ranks, so {plan.repeated_rows} row(s) from the epoch's start are "
                 "seen twice per epoch")
    else:
        line += ", every row seen once per epoch"
    return line


def batch_rng(seed, epoch, index):
    """Per-batch randomness (e.g. MLM masking) that a resume reproduces exactly."""
    return np.random.RandomState((seed * 7919 + epoch * 104729 + index) % (2**32))


def to_tensors(batch):
    import paddle

    return {k: paddle.to_tensor(v) for k, v in batch.items()}
