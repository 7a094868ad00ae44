"""The contract between a trainer and the engine: what a trainer hands run_training, and the signatures of the
functions in it.

    collate_fn(features, rng) -> Batch
        Pad a list of features into numpy arrays (the model's inputs, by name) and count the real (non-pad)
        tokens in them for tokens/s. rng is the batch's own numpy RandomState (seeded by seed, epoch and batch,
        so a resume draws the same MLM masks); collate functions that need no randomness ignore it.
    loss_fn(model, tensors) -> scalar loss
        tensors: Batch.arrays as paddle tensors. Runs inside the loss layer DataParallel wraps.
    predict_fn(model, split, unit, rows) -> [output per row]
        unit: one evaluation unit (a batch of row indices, as one process computes it); rows: the part of it this
        rank computes (all of it, or a contiguous slice when ranks share the unit to balance their shares). One
        JSON-serialisable output per row, each what computing the whole unit gives it (pad to the unit's longest
        row); gathered to rank 0 (evaluation.sharding).
    score_fn(split, outputs, step) -> Scored
        Rank 0: the split's metrics from outputs[u], unit u's per-row outputs in row order, for every unit in
        order; writes the split's predictions file; and sample rows for the dashboards' table (dev only, [] for none).
    before_training(model) -> None
        Optional: on a fresh start, once output_dir is open, on output_dir's writers (e.g. save the initial model).

Imports: the standard library; numpy for the types only; paddle inside _loss_layer.
"""
import dataclasses
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np


class Batch(NamedTuple):
    """What collate_fn returns: the model's inputs as numpy arrays, and the real tokens among them."""

    arrays: Dict[str, np.ndarray]
    num_tokens: int


class Scored(NamedTuple):
    """What score_fn returns: metrics of one split, and rows for the dashboards' sample table."""

    metrics: Dict[str, float]
    sample_rows: List[Dict[str, Any]] = []


@dataclasses.dataclass
class TrainingTask:
    """What a trainer hands the engine (see the module docstring for the functions' signatures). Evaluation is
    described per split: the engine deals the rows of eval_units[split] across ranks, calls predict_fn on each
    rank's pieces and score_fn on rank 0."""

    config: Dict[str, Any]
    model: Any
    tokenizer: Any
    train_features: List[Any]
    train_lengths: List[int]  # per feature, what group_by_length sorts by
    collate_fn: Callable[..., Batch]
    loss_fn: Callable[..., Any]
    eval_units: Dict[str, list] = dataclasses.field(default_factory=dict)  # "dev"/"test" -> work units (batches)
    predict_fn: Optional[Callable[..., Any]] = None
    score_fn: Optional[Callable[..., Scored]] = None
    metric_for_best: Optional[str] = None  # the trainer's default; config["metric_for_best"] wins
    extra_files: Optional[Dict[str, Any]] = None  # written into each checkpoint and the final model (label maps, ...)
    staged_files: Optional[Dict[str, str]] = None  # {name: temp path}: copied into output_dir once every check passed
    eval_data: Optional[Dict[str, list]] = None  # "dev"/"test" -> tokenized rows, fingerprinted: every node must score the same
    group_by_length: bool = True
    evaluate_at_start: bool = False  # score the starting model as step 0 (not on resume), e.g. perplexity before training
    before_training: Optional[Callable[[Any], None]] = None


def _loss_layer(model, loss_fn):
    """DataParallel syncs gradients only for outputs of its own forward: wrap the task's loss in a Layer."""
    import paddle

    class LossLayer(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.inner_model = model

        def forward(self, batch):
            return loss_fn(self.inner_model, batch)

    return LossLayer()
