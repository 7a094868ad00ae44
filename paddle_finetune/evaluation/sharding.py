"""Evaluation on every rank.

A trainer describes a split as a list of work units (the batches one process computes: lists of row indices,
cut after sorting by length, or in row order) plus two functions: `predict_fn(model, split, unit, rows)` -> one
JSON-serialisable output per row of `rows` (all of the unit, or a contiguous slice of it), each computed as in the
whole unit (padded to the unit's longest row), and `score_fn(split, outputs, step)` -> Scored(metrics,
sample_rows), where outputs[u] lists unit u's rows' outputs in unit order; score_fn also writes the split's
predictions file (training.task).

`deal_rows` shares the rows out so every rank's share is within one row of equal (and no rank that could have
rows is left without): whole units go round-robin in length order (so every rank gets a similar share of long
rows), and the units that fit no rank's remaining share whole are cut between ranks. Each rank predicts its own
pieces, rank 0 gathers the outputs, puts every unit back together in row order and scores them, and every rank
gets the metrics. A row's output does not depend on which rows share its batch as long as the batch is padded to
the same length (row-wise matrix products; checked bit for bit in tests/evaluation/), so the metrics and
predictions equal a one-process evaluation of the same weights.

Imports: the standard library; of the project `runtime.distributed` and `reporting`; paddle inside functions.
"""
import contextlib
import time
from typing import Any, Dict, List, NamedTuple

from paddle_finetune.reporting.console import log
from paddle_finetune.reporting.progress import progress_bar
from paddle_finetune.runtime.distributed import (
    broadcast_from_main,
    gather_to_main,
    get_rank,
    get_world_size,
    is_main_process,
)


# ----------------------------------------------------------------------------
# units: how a trainer cuts a split into batches
# ----------------------------------------------------------------------------
def length_sorted_units(lengths, batch_size):
    """Row indices sorted by length (longest first, stable), cut into batches of batch_size: generation and
    classification pad each batch to its own longest row, so similar lengths waste little."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def in_order_units(n, batch_size):
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


class Piece(NamedTuple):
    """Rows unit[start:stop] of one unit."""

    unit: int
    start: int
    stop: int


def rank_quotas(num_rows, world_size):
    """Rows per rank: the even share, the remainder one each to the first ranks."""
    base, extra = divmod(num_rows, world_size)
    return [base + (1 if rank < extra else 0) for rank in range(world_size)]


def deal_rows(unit_sizes, world_size):
    """Per rank, the pieces it evaluates (sorted by unit): every rank's rows are its rank_quotas share.

    Whole units go to the ranks in turn (the next rank with room for it), longest units first as they come;
    the units no rank has room for are then cut into the ranks' remaining room, in rank order."""
    quota = rank_quotas(sum(unit_sizes), world_size)
    shares, leftover, turn = [[] for _ in range(world_size)], [], 0
    for unit, size in enumerate(unit_sizes):
        rank = next(((turn + k) % world_size for k in range(world_size) if quota[(turn + k) % world_size] >= size), None)
        if size and rank is None:
            leftover.append(unit)
        elif size:
            shares[rank].append(Piece(unit, 0, size))
            quota[rank] -= size
            turn = (rank + 1) % world_size
    rank = 0
    for unit in leftover:
        start = 0
        while start < unit_sizes[unit]:
            while not quota[rank]:
                rank += 1
            stop = min(unit_sizes[unit], start + quota[rank])
            shares[rank].append(Piece(unit, start, stop))
            quota[rank] -= stop - start
            start = stop
    return [sorted(share) for share in shares]


def assemble(units, pieces_outputs):
    """outputs[u]: unit u's per-row outputs in row order, from [(Piece, [outputs])] in any order."""
    by_unit = {}
    for piece, outputs in pieces_outputs:
        piece = Piece(*piece)
        if len(outputs) != piece.stop - piece.start:
            raise ValueError(f"predict_fn returned {len(outputs)} outputs for {piece.stop - piece.start} rows")
        by_unit.setdefault(piece.unit, []).append((piece.start, outputs))
    assembled = []
    for u, unit in enumerate(units):
        rows = [out for _, outputs in sorted(by_unit.get(u, []), key=lambda p: p[0]) for out in outputs]
        if len(rows) != len(unit):
            raise ValueError(f"unit {u}: {len(rows)} outputs for {len(unit)} rows")
        assembled.append(rows)
    return assembled


# ----------------------------------------------------------------------------
# sharded evaluation
# ----------------------------------------------------------------------------
@contextlib.contextmanager
def eval_mode(model, use_amp=False, amp_dtype="float16"):
    """no_grad and eval mode; on GPU with use_amp, under the training's auto_cast dtype (fp16/bf16 generation is
    the normal way to evaluate on a GPU; on CPU auto_cast does nothing)."""
    import paddle

    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad(), paddle.amp.auto_cast(enable=use_amp, dtype=amp_dtype, level="O1"):
            yield
    finally:
        if was_training:
            model.train()


class Evaluation(NamedTuple):
    """One split's evaluation: metrics on every rank; the sample rows for the dashboards on rank 0 only."""

    metrics: Dict[str, Any]  # numbers, and string labels of how they were computed (rouge_style)
    sample_rows: List[Dict[str, Any]]


def evaluate_split(model, split, units, predict_fn, score_fn, step, use_amp=False, amp_dtype="float16"):
    """The Evaluation of `split`; rank 0 also wrote its predictions (score_fn). See the module docstring."""
    rank, world_size = get_rank(), get_world_size()
    started = time.perf_counter()
    total = sum(len(u) for u in units)
    mine = deal_rows([len(u) for u in units], world_size)[rank]
    rows = sum(p.stop - p.start for p in mine)
    bar = progress_bar(rows, f"eval {split}")
    outputs = []
    with eval_mode(model, use_amp, amp_dtype):
        for piece in mine:
            unit = units[piece.unit]
            outputs.append([list(piece), list(predict_fn(model, split, unit, unit[piece.start:piece.stop]))])
            bar.update(piece.stop - piece.start)
    bar.close()
    if world_size > 1:
        # the worker logs (log/workerlog.N) say how the split was shared
        print(f"rank {rank}: evaluated {rows} of {total} {split} rows", flush=True)
    gathered = gather_to_main(outputs)
    metrics, sample_rows = None, []
    if is_main_process():
        scored = score_fn(split, assemble(units, [p for part in gathered for p in part]), step)
        # Numbers rounded; a string is a label of how they were computed (rouge_style) and stays as it is.
        metrics = {k: v if isinstance(v, str) else round(float(v), 4) for k, v in scored.metrics.items()}
        sample_rows = list(scored.sample_rows or [])
        log(f"eval {split}: {total} rows in {time.perf_counter() - started:.1f} s"
            + (f" on {world_size} ranks" if world_size > 1 else ""))
    return Evaluation(broadcast_from_main(metrics), sample_rows)
