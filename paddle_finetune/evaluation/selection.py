"""Selection: `is_better`, `update_best` and `should_stop_early` are pure functions over the train state the
loop keeps (and checkpoints): which evaluation is the best, and when patience has run out.

Evaluations are compared only when they scored the same dev data with the same evaluation settings: the dev
features' fingerprint and the EVALUATION_KEYS below, together an evaluation's `evaluation_fingerprint` (which every
metrics.jsonl row carries). A resume that changes either is refused (checkpoints.resume), or with
resume_ignore_mismatch re-bases the best (`rebase_best`).

The state is any object with the attributes best_metric, best_step, best_checkpoint and
evals_without_improvement (training.state.TrainState).

Imports: the standard library only.
"""
import hashlib
import json
import math

# The config keys that decide what an evaluation's numbers mean, besides the data it scores: generation and the
# metric. (The dev data itself -- dev_file, max_eval_samples, dev_size, columns, tokenization -- is compared by the
# fingerprint of its tokenized features, so the same rows spelled another way stay comparable.) Keys a trainer
# does not have are skipped.
EVALUATION_KEYS = frozenset({
    "num_beams", "max_target_length", "min_target_length",  # how summaries are generated
    "metric_for_best", "greater_is_better",  # what "better" means
    "rouge_style",  # how ROUGE counts (the styles differ by points)
})


def evaluation_settings(config):
    """{key: value} of the EVALUATION_KEYS a config has."""
    return {key: config[key] for key in sorted(EVALUATION_KEYS) if key in config}


def evaluation_fingerprint(data_fingerprint, config):
    """"sha256:<16 hex>" of a split's data fingerprint and the evaluation settings: two evaluations with the same
    one scored the same rows the same way, and only they are compared."""
    text = json.dumps([data_fingerprint, evaluation_settings(config)], sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def rebase_best(state):
    """Forget the best so far (its evaluation is no longer comparable): the next evaluation starts a new best.
    Returns what was forgotten, (best_metric, best_step, best_checkpoint)."""
    forgotten = (state.best_metric, state.best_step, state.best_checkpoint)
    state.best_metric = state.best_step = state.best_checkpoint = None
    state.evals_without_improvement = 0
    if hasattr(state, "stopped_early_at"):
        state.stopped_early_at = None
    return forgotten


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
