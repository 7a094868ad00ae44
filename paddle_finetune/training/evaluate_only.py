"""Evaluation inside a run: one split of a task scored on every rank (evaluate), and runs that only evaluate
(do_train=False: HF's --do_eval / --do_predict) into metrics.jsonl and all_results.json.

Imports: the standard library; paddle inside; of the project `checkpoints`, `evaluation`, `reporting`,
`runtime`, `speedups` and `training`.
"""
import os

from paddle_finetune import speedups
from paddle_finetune.checkpoints.output_dir import open_output_dir
from paddle_finetune.checkpoints.resume import data_fingerprint
from paddle_finetune.evaluation.selection import evaluation_fingerprint
from paddle_finetune.evaluation.sharding import evaluate_split
from paddle_finetune.reporting.console import log, warn_once
from paddle_finetune.reporting.curves import METRICS_LOG
from paddle_finetune.reporting.files import append_jsonl, summary_lines, write_results
from paddle_finetune.runtime.distributed import get_world_size, is_main_process
from paddle_finetune.runtime.environment import evaluation_math
from paddle_finetune.runtime.multinode import agree_on_data
from paddle_finetune.training.amp import resolve_amp
from paddle_finetune.training.session import copy_staged_files


def evaluate(task, model, split, step, use_amp=False, amp_dtype="float16"):
    """The Evaluation of one split on every rank (None when the task has no such split); see evaluation.sharding."""
    if split not in task.eval_units or task.predict_fn is None:
        return None
    speedups.release_free_memory()  # training's free blocks fit generation badly (speedups.process)
    try:
        with evaluation_math():  # the same bits on one process and on N ranks (runtime.environment)
            return evaluate_split(model, split, task.eval_units[split], task.predict_fn, task.score_fn, step,
                                  use_amp=use_amp, amp_dtype=amp_dtype)
    finally:
        speedups.release_free_memory()


def eval_fingerprints(task):
    """{split: data_fingerprint} of the task's dev and test data (eval_data: what evaluation scores)."""
    return {split: data_fingerprint(rows) for split, rows in (task.eval_data or {}).items()}


def check_same_data_on_every_rank(task, train_fingerprint=None, fingerprints=None):
    """Each node reads its own data files and builds its own vocab: the tokenized splits must be equal on every rank."""
    if get_world_size() == 1:
        return
    fingerprints = dict(eval_fingerprints(task) if fingerprints is None else fingerprints)
    if train_fingerprint is not None:
        fingerprints["train"] = train_fingerprint
    agree_on_data(fingerprints)


def run_evaluation(task):
    """do_train=False: score the loaded model on dev and test into metrics.jsonl and all_results.json."""
    import paddle

    cfg = task.config
    out = cfg["output_dir"]
    use_amp, amp_dtype = resolve_amp(cfg, "gpu" if paddle.get_device().startswith("gpu") else "cpu")
    fingerprints = eval_fingerprints(task)
    check_same_data_on_every_rank(task, fingerprints=fingerprints)
    if cfg.get("fast_kernels", True):  # the layers training evaluates with: the same numbers
        speedups.use_fast_cpu_kernels(task.model)
    open_output_dir(cfg)
    copy_staged_files(task.staged_files, out)
    log(f"do_train=False: evaluating {cfg.get('pretrained_model') or 'the model built from model_config'}")
    results = {}
    for split, prefix in (("dev", "eval"), ("test", "test")):
        evaluation = evaluate(task, task.model, split, 0, use_amp, amp_dtype)
        if evaluation is not None:
            metrics = evaluation.metrics
            append_jsonl(os.path.join(out, METRICS_LOG), {"step": 0, "split": split, **metrics,
                                                          "eval_fingerprint": evaluation_fingerprint(fingerprints.get(split), cfg)})
            log(f"{split}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            results.update({f"{prefix}_{k}": v for k, v in metrics.items()})
    if not results:
        warn_once("do_train=False with no dev or test data: nothing to evaluate")
    if is_main_process():
        results = write_results(out, results)
    log("\n".join(summary_lines(results)))
    return {"global_step": 0, "results": results}
