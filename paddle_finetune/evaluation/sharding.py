"""Evaluation on every rank.

A trainer describes a split as a list of work units (batches of row indices, cut after sorting by
length, or pre-built batches) plus two functions: `predict_fn(model, split, unit)` -> a JSON-serialisable
output for that unit, and `score_fn(split, outputs, step)` -> Scored(metrics, sample_rows), which also writes
the split's predictions file (training.task). `evaluate_split` deals the units round-robin across ranks (so every rank gets a
similar share of long rows), each rank predicts its own, rank 0 gathers the outputs in unit order
and scores them, and every rank gets the metrics. Units are the same batches a single process cuts,
so the metrics and predictions equal a one-process evaluation of the same weights.

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


def shard_units(num_units, rank, world_size):
    """This rank's units: every world_size-th, starting at its rank. After a length sort that spreads the
    long batches evenly."""
    return list(range(rank, num_units, world_size))


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


def evaluate_split(model, split, units, predict_fn, score_fn, step, use_amp=False, amp_dtype="float16", unit_rows=len):
    """The Evaluation of `split`; rank 0 also wrote its predictions (score_fn). See the module docstring."""
    rank, world_size = get_rank(), get_world_size()
    started = time.perf_counter()
    mine = shard_units(len(units), rank, world_size)
    bar = progress_bar(sum(unit_rows(units[i]) for i in mine), f"eval {split}")
    outputs = {}
    with eval_mode(model, use_amp, amp_dtype):
        for i in mine:
            outputs[i] = predict_fn(model, split, units[i])
            bar.update(unit_rows(units[i]))
    bar.close()
    rows = sum(unit_rows(units[i]) for i in mine)
    if world_size > 1:
        # the worker logs (log/workerlog.N) say how the split was shared
        print(f"rank {rank}: evaluated {rows} of {sum(unit_rows(u) for u in units)} {split} rows", flush=True)
    gathered = gather_to_main([[i, out] for i, out in outputs.items()])
    metrics, sample_rows = None, []
    if is_main_process():
        by_unit = {i: out for part in gathered for i, out in part}
        scored = score_fn(split, [by_unit[i] for i in range(len(units))], step)
        # Numbers rounded; a string is a label of how they were computed (rouge_style) and stays as it is.
        metrics = {k: v if isinstance(v, str) else round(float(v), 4) for k, v in scored.metrics.items()}
        sample_rows = list(scored.sample_rows or [])
        log(f"eval {split}: {sum(unit_rows(u) for u in units)} rows in {time.perf_counter() - started:.1f} s"
            + (f" on {world_size} ranks" if world_size > 1 else ""))
    return Evaluation(broadcast_from_main(metrics), sample_rows)
