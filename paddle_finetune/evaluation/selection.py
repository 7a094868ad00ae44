"""Selection: `is_better`, `update_best` and `should_stop_early` are pure functions over the train state the
loop keeps (and checkpoints): which evaluation is the best, and when patience has run out.

The state is any object with the attributes best_metric, best_step, best_checkpoint and
evals_without_improvement (training.state.TrainState).

Imports: the standard library only.
"""
import math


def is_better(value, best, greater_is_better, threshold=0.0):
    """value improves on best by more than threshold (best None: anything finite does)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best + threshold if greater_is_better else value < best - threshold


def update_best(state, metrics, step, metric, greater_is_better, threshold=0.0):
    """Record one evaluation in the train state. Returns True when it is a new best.

    The best is tracked at every evaluation; the patience counter counts evaluations whose metric did
    not beat the best by more than threshold.
    """
    value = metrics.get(metric)
    improved = is_better(value, state.best_metric, greater_is_better)
    if is_better(value, state.best_metric, greater_is_better, threshold):
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
    if improved:
        state.best_metric, state.best_step, state.best_checkpoint = value, step, None
    return improved


def should_stop_early(state, patience):
    return patience > 0 and state.evals_without_improvement >= patience
