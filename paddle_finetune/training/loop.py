"""The training loop: train, evaluate, checkpoint and report; then keep the best model, score the test split
with it and export it to the root of output_dir.

    run_training(task) = setup -> fit -> finish

`fit` reads top to bottom on one screen:
lr -> maybe eval/save -> forward under auto_cast -> scaled backward -> clip -> step -> clear -> log -> stop check.
Everything it works with is set up once in a Loop; the helpers below it each do one of those things.

A signal (SIGTERM, Ctrl-C) sets a flag on the main thread; the loop saves a checkpoint at the next step boundary
and raises RunInterrupted, which the CLI turns into exit status 128+N. Off the main thread (a notebook's worker
thread) no handler is installed: Python delivers signals to the main thread only.

Imports: the standard library; paddle inside; of the project everything below `training`.
"""
import contextlib
import dataclasses
import math
import os
import signal
import threading
import time
from typing import Any, Dict, Optional

from paddle_finetune import speedups
from paddle_finetune.checkpoints.files import CHECKPOINT_PREFIX
from paddle_finetune.checkpoints.listing import latest_checkpoint, rotate_checkpoints
from paddle_finetune.checkpoints.output_dir import open_output_dir
from paddle_finetune.checkpoints.ownership import recorded_names
from paddle_finetune.checkpoints.resume import (check_max_steps, check_resume_compatible, data_fingerprint, evaluation_changes,
                                               resolve_resume)
from paddle_finetune.checkpoints.storage import (export_final_model, load_checkpoint, load_rank_rng, save_checkpoint,
                                                 write_run_state)
from paddle_finetune.configuration.rules import resolve_greater_is_better
from paddle_finetune.data.batching import batch_rng, describe_plan, epoch_batches, epoch_plan, to_tensors
from paddle_finetune.errors import CheckpointError, ConfigError, RunInterrupted, TrainingError
from paddle_finetune.evaluation.selection import evaluation_fingerprint, rebase_best, should_stop_early, update_best
from paddle_finetune.models.loading import check_tokenizer_fits, count_parameters
from paddle_finetune.models.weights import apply_model_weights, read_model_weights
from paddle_finetune.reporting.console import log, warn_once
from paddle_finetune.reporting.curves import METRICS_LOG, TRAIN_LOG, plot_training_curves
from paddle_finetune.reporting.dashboards import open_reporting
from paddle_finetune.reporting.files import append_jsonl, summary_lines, truncate_jsonl, write_results
from paddle_finetune.reporting.progress import progress_bar
from paddle_finetune.runtime.distributed import (all_gather, barrier, broadcast_flag, broadcast_from_main, get_rank,
                                                 get_world_size, is_main_process, mean_across_ranks, writes_output)
from paddle_finetune.runtime.environment import cpu_threads
from paddle_finetune.runtime.multinode import agree_on_resume
from paddle_finetune.runtime.rng import (get_rng_state, paddle_cpu_rng_checkpoints, reseed_paddle_cpu, rng_state_to_json,
                                         set_rng_state)
from paddle_finetune.training.amp import amp_step_skipped, amp_stop_reason, loss_scale, resolve_amp, skipped_in_a_row
from paddle_finetune.training.evaluate_only import check_same_data_on_every_rank, eval_fingerprints, evaluate, run_evaluation
from paddle_finetune.training.optimization import build_optimizer
from paddle_finetune.training.recompute import use_recompute
from paddle_finetune.training.session import copy_staged_files
from paddle_finetune.training.state import Totals, TrainState, Window
from paddle_finetune.training.task import _loss_layer


# ----------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------
def run_training(task):
    """Train, evaluate, checkpoint and report; then keep the best model (load_best_model_at_end), score the test
    split with it and export it to the root of output_dir. With do_train=False, only evaluate (run_evaluation).
    Returns {"global_step", "results", "state"}: results is all_results.json's content (rank 0)."""
    # Before output_dir opens: a tokenizer with ids the embedding has no row for crashed at the first step.
    check_tokenizer_fits(task.tokenizer, task.model, f"pretrained_model {task.config.get('pretrained_model') or '(model_config)'}")
    if not task.config.get("do_train", True):
        return run_evaluation(task)
    loop = setup(task)
    try:
        fit(loop)
        return finish(loop)
    finally:
        loop.bar.close()
        loop.reporter.close()  # wandb finished and VisualDL flushed, whatever ended the run


def fit(loop):
    """The loop, top to bottom: lr -> maybe eval/save -> forward/backward -> clip/step/clear -> log -> stop check."""
    if loop.task.evaluate_at_start and loop.resumed is None:
        evaluate_dev(loop, 0)
    loop.model.train()
    with stop_requests() as stop:
        while True:
            step = loop.state.global_step
            lr = loop.lr_scheduler.get_lr()
            maybe_evaluate_and_save(loop, step)
            if step >= loop.max_steps or loop.stopped_early:
                break
            loss, tokens = train_step(loop, step)
            log_step(loop, lr, loss, tokens)
            if broadcast_flag(stop.signum is not None):
                stop_at_signal(loop, stop.signum)


# ----------------------------------------------------------------------------
# setup: everything the loop works with
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class Loop:
    """What setup() builds and the helpers read; `state` is what a checkpoint carries."""

    task: Any
    cfg: Dict[str, Any]
    out: str
    model: Any
    train_model: Any  # the loss layer (DataParallel-wrapped with several ranks)
    optimizer: Any
    lr_scheduler: Any
    scaler: Any
    reporter: Any
    bar: Any
    stream: Any  # micro_batch_stream
    state: TrainState
    resumed: Optional[Any]  # the checkpoint resumed from (CheckpointContents), None for a fresh start
    fingerprint: str
    eval_ids: Dict[str, str]  # split -> evaluation_fingerprint, carried by its metrics.jsonl rows
    use_amp: bool
    amp_dtype: str
    max_steps: int
    steps_per_epoch: int
    micro_per_epoch: int
    accumulation: int
    eval_steps: int
    save_steps: int
    metric: Optional[str]
    greater_is_better: bool
    patience: int
    threshold: float
    rank: int
    world_size: int
    window: Window = dataclasses.field(default_factory=Window)
    totals: Totals = dataclasses.field(default_factory=Totals)
    last_eval_step: int = -1
    last_save_step: int = -1
    dev_metrics: Dict[int, Dict[str, float]] = dataclasses.field(default_factory=dict)  # step -> dev metrics
    stopped_early: bool = False

    @property
    def global_batch(self):
        return self.cfg["train_batch_size"] * self.world_size * self.accumulation


def setup(task):
    """Checks, the optimizer, the resumed state; then (every check passed) output_dir opens and the dashboards start."""
    import paddle

    cfg = task.config
    out = cfg["output_dir"]
    rank, world_size = get_rank(), get_world_size()
    device = paddle.get_device()
    use_amp, amp_dtype = resolve_amp(cfg, "gpu" if device.startswith("gpu") else "cpu")
    accumulation = cfg["gradient_accumulation_steps"]
    if accumulation < 1:
        raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {accumulation}")
    fingerprint = data_fingerprint(task.train_features)  # in every checkpoint: a resume must see the same data
    split_fingerprints = eval_fingerprints(task)  # the dev data the best is chosen on, in the train state
    dev_fingerprint = split_fingerprints.get("dev") if "dev" in task.eval_units else None
    # Before DataParallel, whose start broadcasts rank 0's weights: another vocab means other shapes, and gloo fails
    # on them with a message about buffer sizes.
    check_same_data_on_every_rank(task, fingerprint, split_fingerprints)
    micro_per_epoch = len(epoch_batches(task.train_lengths, cfg["train_batch_size"], world_size, rank, cfg["seed"], 0,
                                        task.group_by_length))
    max_steps, steps_per_epoch = compute_max_steps(cfg, micro_per_epoch)
    metric, greater = selection(task)
    model = task.model
    optimizer, lr_scheduler = build_optimizer(model, cfg, max_steps)
    scaler = paddle.amp.GradScaler(enable=use_amp and amp_dtype == "float16", init_loss_scaling=cfg["scale_loss"])
    if cfg.get("fast_kernels", True):
        speedups.use_fast_cpu_kernels(model)
    if cfg.get("recompute", False):  # after the speed patches, which swap the blocks' classes by exact type
        log(f"recompute: {use_recompute(model)} transformer blocks recompute their activations in the backward")
    train_model = _loss_layer(model, task.loss_fn)
    if world_size > 1:
        train_model = paddle.DataParallel(train_model)

    state = TrainState(metric_for_best=metric, world_size=world_size, dev_fingerprint=dev_fingerprint)
    def within_an_epoch(contents):  # what only the run can check: damage, so auto falls back past it
        position = contents.train_state.get("position", 0)
        if position > micro_per_epoch:
            raise CheckpointError(f"{contents.path}/trainer_state.json: position {position} is past the end of an epoch "
                                  f"({micro_per_epoch} batches)")

    # read and verified (or None), the same on every rank
    resumed = agree_on_resume(lambda: resolve_resume(cfg, validate=within_an_epoch))
    if resumed:
        for note in check_resume_compatible(resumed, cfg, world_size, fingerprint, dev_fingerprint=dev_fingerprint,
                                            ignore_mismatch=cfg.get("resume_ignore_mismatch", False)):
            log(note)
        incomparable = evaluation_changes(resumed, cfg, dev_fingerprint)  # only past the check with resume_ignore_mismatch
        check_max_steps(resumed.step, max_steps, resumed.name)
        saved = load_checkpoint(resumed, model, optimizer, lr_scheduler, scaler)
        state = TrainState.from_dict({**state.to_dict(), **saved["train_state"]})
        set_rng_state(load_rank_rng(resumed, rank, saved["rng"]))
        if incomparable:
            log(rebase_line(rebase_best(state), metric, incomparable))
        state.dev_fingerprint, state.metric_for_best = dev_fingerprint, metric

    # Every check has passed: from here on output_dir may change.
    open_output_dir(cfg)
    copy_staged_files(task.staged_files, out)
    if resumed:
        log(f"resumed from {resumed}: step {state.global_step}, epoch {state.epoch}, batch {state.position} of {micro_per_epoch}")
    if cfg.get("resume_from_checkpoint"):
        # Lines a killed run logged past its checkpoint (all of them, when there was none) are replayed.
        truncate_jsonl(os.path.join(out, TRAIN_LOG), state.global_step)
        truncate_jsonl(os.path.join(out, METRICS_LOG), state.global_step)
    elif task.before_training is not None and writes_output():
        task.before_training(model)

    eval_steps, save_steps = cfg.get("eval_steps") or cfg["save_steps"], cfg["save_steps"]
    log(f"training: {len(task.train_features)} examples, {max_steps} steps ({steps_per_epoch} per epoch), "
        f"global batch {cfg['train_batch_size'] * world_size * accumulation} = {cfg['train_batch_size']} per device x "
        f"{world_size} device(s) x {accumulation} accumulation, "
        f"device {device}{f' ({cpu_threads()} math threads)' if device == 'cpu' else ''}, "
        f"{'AMP ' + amp_dtype if use_amp else 'fp32'}, {count_parameters(model) / 1e6:.2f}M parameters")
    layout = describe_plan(epoch_plan(len(task.train_features), cfg["train_batch_size"], world_size),
                           len(task.train_features), cfg["train_batch_size"], world_size)
    if layout:
        log(layout)
    if "dev" in task.eval_units and eval_steps % save_steps != 0 and max_steps > eval_steps:
        warn_once(f"eval_steps={eval_steps} is not a multiple of save_steps={save_steps}: an evaluation that beats the best "
                  "between saves saves a checkpoint of its own, so the best can be kept; use a multiple to avoid the extra saves")
    reporter = open_reporting(cfg.get("report_to", ""), cfg, out, run_id=state.wandb_run_id,
                              resume_step=state.global_step if cfg.get("resume_from_checkpoint") else None)
    wandb_run_id = broadcast_from_main(reporter.wandb_run_id)  # only rank 0 reports; every node's checkpoints name its run
    if wandb_run_id:
        state.wandb_run_id = wandb_run_id
    now = time.perf_counter()
    loop = Loop(
        task=task, cfg=cfg, out=out, model=model, train_model=train_model, optimizer=optimizer, lr_scheduler=lr_scheduler,
        scaler=scaler, reporter=reporter, bar=progress_bar(max_steps, "train", initial=state.global_step),
        stream=micro_batch_stream(task, rank, world_size, state.epoch, state.position), state=state, resumed=resumed,
        fingerprint=fingerprint, eval_ids={split: evaluation_fingerprint(fp, cfg) for split, fp in split_fingerprints.items()},
        use_amp=use_amp, amp_dtype=amp_dtype, max_steps=max_steps, steps_per_epoch=steps_per_epoch,
        micro_per_epoch=micro_per_epoch, accumulation=accumulation, eval_steps=eval_steps, save_steps=save_steps,
        metric=metric, greater_is_better=greater, patience=cfg.get("early_stopping_patience", 0),
        threshold=cfg.get("early_stopping_threshold", 0.0), rank=rank, world_size=world_size,
        window=Window(start=now), totals=Totals(start=now),
    )
    if resumed:  # the checkpoint resumed from was evaluated and saved already: doing it again would log twice
        loop.last_eval_step = loop.last_save_step = state.global_step
        loop.stopped_early = should_stop_early(state, loop.patience)
    return loop


def rebase_line(forgotten, metric, changes):
    """The log line of a re-based best: what was forgotten, and why."""
    best_metric, best_step, best_checkpoint = forgotten
    earlier = (f"the earlier best ({metric}={best_metric} at step {best_step}"
               + (f", {best_checkpoint}" if best_checkpoint else "") + ")") if best_step is not None else "earlier evaluations"
    shown = ", ".join(f"{key} {old} -> {new}" for key, old, new in changes)
    return (f"resume_ignore_mismatch=True: the best is re-based: {earlier} scored other dev data or settings ({shown}) "
            "and is no longer compared; the next evaluation starts a new best")


def compute_max_steps(config, num_micro_batches_per_epoch):
    steps_per_epoch = max(1, math.ceil(num_micro_batches_per_epoch / config["gradient_accumulation_steps"]))
    if config["max_steps"] > 0:
        return config["max_steps"], steps_per_epoch
    return steps_per_epoch * config["num_train_epochs"], steps_per_epoch


def micro_batch_stream(task, rank, world_size, epoch, position):
    """Yield (epoch, position_after, Batch) forever, starting mid-epoch when resuming."""
    cfg = task.config
    while True:
        batches = epoch_batches(task.train_lengths, cfg["train_batch_size"], world_size, rank, cfg["seed"], epoch,
                                task.group_by_length)
        for index in range(position, len(batches)):
            features = [task.train_features[i] for i in batches[index]]
            yield epoch, index + 1, task.collate_fn(features, batch_rng(cfg["seed"], epoch, index * world_size + rank))
        epoch, position = epoch + 1, 0


def selection(task):
    """(metric, greater_is_better) that pick the best model: the config's metric_for_best, else the trainer's."""
    metric = task.config.get("metric_for_best") or task.metric_for_best
    return metric, resolve_greater_is_better(metric, task.config.get("greater_is_better")) if metric else True


# ----------------------------------------------------------------------------
# the loop's steps
# ----------------------------------------------------------------------------
def maybe_evaluate_and_save(loop, step):
    """At eval and save intervals, when a new best needs keeping, and at the end."""
    state = loop.state
    if step > 0 and (step % loop.eval_steps == 0 or step >= loop.max_steps) and step != loop.last_eval_step:
        improved = evaluate_dev(loop, step)
        loop.last_eval_step = step
        if improved and step % loop.save_steps != 0 and step < loop.max_steps and step != loop.last_save_step:
            save(loop, step)  # the best must be on disk to be loaded back at the end
        if should_stop_early(state, loop.patience):
            loop.stopped_early, state.stopped_early_at = True, step
            log(f"early stopping at step {step}: {loop.metric} has not improved by more than {loop.threshold} for "
                f"{loop.patience} evaluation(s); best {state.best_metric} at step {state.best_step}")
    if step > 0 and (step % loop.save_steps == 0 or step >= loop.max_steps or loop.stopped_early) and step != loop.last_save_step:
        save(loop, step)


def evaluate_dev(loop, step):
    """Score dev, log it, and record it in the selection state. Returns True for a new best."""
    evaluation = evaluate(loop.task, loop.model, "dev", step, loop.use_amp, loop.amp_dtype)
    if evaluation is None:
        return False
    metrics, state = evaluation.metrics, loop.state
    loop.dev_metrics[step] = metrics
    if is_main_process():
        append_jsonl(os.path.join(loop.out, METRICS_LOG), {"step": step, **metrics, "eval_fingerprint": loop.eval_ids.get("dev")})
        loop.reporter.scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
        rows = evaluation.sample_rows
        if rows:
            loop.reporter.table("eval/samples", list(rows[0].keys()), [list(r.values()) for r in rows], step)
    shown = ", ".join(f"{k}={v}" for k, v in metrics.items())
    if step == 0:  # the starting model is a reference, not a candidate
        log(f"eval at step 0 (before training): {shown}")
        return False
    improved = update_best(state, metrics, step, loop.metric, loop.greater_is_better, loop.threshold)
    log(f"eval at step {step}: {shown}"
        + (f" (new best {loop.metric})" if improved else f" (best {loop.metric}={state.best_metric} at step {state.best_step})"))
    return improved


def save(loop, step):
    """A checkpoint of this step on every writer, then rotation; every rank waits for it."""
    state, out = loop.state, loop.out
    # Each rank's dropout stream is its own: every rank's RNG goes into every writer's checkpoint, through the
    # store, so each node's copy is complete without a shared disk.
    rng_states = all_gather(rng_state_to_json(get_rng_state()))
    if state.best_step == step:
        state.best_checkpoint = f"{CHECKPOINT_PREFIX}{step}"  # relative to output_dir, wherever it moves
    if writes_output():
        path = save_checkpoint(out, step, loop.model, loop.task.tokenizer, loop.optimizer, loop.lr_scheduler, loop.scaler,
                               state.to_dict(), loop.cfg, loop.task.extra_files, rng_states=rng_states,
                               data_fingerprint=loop.fingerprint)
        best = [os.path.join(out, state.best_checkpoint)] if state.best_checkpoint else []
        removed = rotate_checkpoints(out, loop.cfg.get("save_total_limit", 0), keep=best + [path], owned=recorded_names(out))
        write_run_state(out, state.to_dict())
    if is_main_process():
        loop.reporter.flush()  # a resume carries over only what reached the disk
        log(f"saved {path}" + (f" (best {loop.metric}={state.best_metric}: {state.best_checkpoint})" if state.best_checkpoint else "")
            + (f"; removed {', '.join(os.path.basename(p) for p in removed)}" if removed else ""))
    barrier()
    loop.last_save_step = step


def train_step(loop, step):
    """One optimizer step: forward under auto_cast and scaled backward per micro-batch (accumulated), clip and step
    (ClipGradByGlobalNorm inside the optimizer; GradScaler skips inf/NaN steps under float16), clear. Returns the
    step's loss (mean across ranks) and this rank's real tokens."""
    import paddle

    if not paddle_cpu_rng_checkpoints():  # paddle 2.6: its CPU RNG cannot be checkpointed (runtime.rng)
        reseed_paddle_cpu(loop.cfg["seed"], step, loop.rank)
    step_loss, step_tokens = 0.0, 0
    for micro in range(loop.accumulation):
        epoch, position, batch = next(loop.stream)
        last_micro = loop.world_size == 1 or micro == loop.accumulation - 1
        with contextlib.nullcontext() if last_micro else loop.train_model.no_sync():
            with paddle.amp.auto_cast(enable=loop.use_amp, dtype=loop.amp_dtype, level="O1"):
                loss = loop.train_model(to_tensors(batch.arrays))
            loop.scaler.scale(loss / loop.accumulation).backward()
        step_loss += float(loss) / loop.accumulation
        step_tokens += batch.num_tokens
    step_loss = mean_across_ranks(step_loss)
    # float16 AMP: GradScaler skips a step with inf/NaN grads and lowers the scale. Without loss scaling (fp32,
    # bfloat16) nothing would skip it, and one NaN step poisons every weight.
    if not loop.scaler.is_enable() and not math.isfinite(step_loss):
        raise TrainingError(
            f"loss is {step_loss} at step {step + 1} ({'AMP ' + loop.amp_dtype if loop.use_amp else 'fp32'}, no loss scaling): "
            f"stopping. The last good checkpoint is kept: {latest_checkpoint(loop.out) or 'none yet'}. "
            "Lower learning_rate or check the data")
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loop.optimizer.clear_grad()
    loop.lr_scheduler.step()
    check_amp(loop, step)
    state = loop.state
    state.global_step, state.epoch, state.position = step + 1, epoch, position
    if position >= loop.micro_per_epoch:  # the epoch ended exactly here: resume starts the next one
        state.epoch, state.position = epoch + 1, 0
    return step_loss, step_tokens


def check_amp(loop, step):
    """float16 AMP that has stopped learning (every step skipped, or the scale below 1) stops the run."""
    skipped = amp_step_skipped(loop.scaler)
    loop.state.amp_skipped_in_a_row = skipped_in_a_row(loop.state.amp_skipped_in_a_row, skipped)
    loop.window.skipped += skipped
    reason = amp_stop_reason(loop.state.amp_skipped_in_a_row, loss_scale(loop.scaler))
    if reason:
        raise TrainingError(
            f"{reason} at step {step + 1}: the model is not learning, stopping. The last good checkpoint is kept: "
            f"{latest_checkpoint(loop.out) or 'none yet'}. Try amp_dtype=\"bfloat16\" or a lower learning_rate")


def log_step(loop, lr, loss, tokens):
    """Count the step; every logging_steps (and at the end), a train_log.jsonl line, the dashboards and the console."""
    window, totals, state = loop.window, loop.totals, loop.state
    window.loss, window.steps, window.tokens = window.loss + loss, window.steps + 1, window.tokens + tokens * loop.world_size
    totals.steps, totals.loss, totals.tokens = totals.steps + 1, totals.loss + loss, totals.tokens + tokens * loop.world_size
    loop.bar.update(1)
    if state.global_step % loop.cfg["logging_steps"] != 0 and state.global_step != loop.max_steps:
        return
    elapsed = time.perf_counter() - window.start
    record = {
        "step": state.global_step,
        "epoch": round(state.global_step / loop.steps_per_epoch, 4),
        "loss": window.loss / window.steps,
        "lr": lr,
        "tokens": window.tokens,  # real (non-pad) tokens in this window, all ranks
        "tokens_per_s": round(window.tokens / max(elapsed, 1e-9), 1),
    }
    if loop.scaler.is_enable():
        record["skipped_steps"] = window.skipped  # steps GradScaler skipped (inf/NaN gradients)
    append_jsonl(os.path.join(loop.out, TRAIN_LOG), record)
    loop.reporter.scalars({"train/loss": record["loss"], "train/lr": lr, "train/tokens_per_s": record["tokens_per_s"]}, record["step"])
    loop.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
    log(f"step {record['step']}/{loop.max_steps} loss {record['loss']:.4f} lr {lr:.3e} {record['tokens_per_s']:.0f} tok/s")
    loop.window = Window(start=time.perf_counter())


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary and stops."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signum = signum
        log(f"received {signal.Signals(signum).name}: will save a checkpoint after this step and exit")


@contextlib.contextmanager
def stop_requests():
    """A StopRequest installed for SIGTERM and SIGINT while the loop runs, the previous handlers restored after.
    Only the main thread can install handlers; elsewhere the request never fires (the caller's own handling stays)."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def stop_at_signal(loop, signum):
    """Save where we are, draw the curves so far, and stop the run (RunInterrupted: exit status 128+N)."""
    signum = signum or signal.SIGTERM
    save(loop, loop.state.global_step)
    loop.bar.close()
    loop.reporter.close()
    if is_main_process():
        plot_training_curves(loop.out)
    log(f"stopped by signal at step {loop.state.global_step}; resume with --resume_from_checkpoint=auto")
    raise RunInterrupted(signum, loop.state.global_step)


# ----------------------------------------------------------------------------
# the end: the model the run keeps, the test split, the results
# ----------------------------------------------------------------------------
def finish(loop):
    loop.bar.close()
    runtime = time.perf_counter() - loop.totals.start
    final_step = keep_final_model(loop)
    dev = loop.dev_metrics.get(final_step) if loop.last_eval_step == final_step else None
    if dev is None:  # predictions_dev.jsonl and the final dev metrics come from the kept model
        evaluation = evaluate(loop.task, loop.model, "dev", final_step, loop.use_amp, loop.amp_dtype)
        dev = evaluation.metrics if evaluation else None
    evaluation = evaluate(loop.task, loop.model, "test", final_step, loop.use_amp, loop.amp_dtype)
    test = evaluation.metrics if evaluation else None
    if test is not None:
        append_jsonl(os.path.join(loop.out, METRICS_LOG), {"step": final_step, "split": "test", **test,
                                                            "eval_fingerprint": loop.eval_ids.get("test")})
        log("test: " + ", ".join(f"{k}={v}" for k, v in test.items()))
    state, totals = loop.state, loop.totals
    results = {
        "train_runtime": round(runtime, 3), "train_steps": totals.steps, "global_step": state.global_step,
        "epoch": round(state.global_step / loop.steps_per_epoch, 4),
        "train_loss": round(totals.loss / totals.steps, 6) if totals.steps else None,
        "train_samples_per_second": round(totals.steps * loop.global_batch / runtime, 3) if totals.steps else None,
        "train_tokens_per_second": round(totals.tokens / runtime, 1) if totals.steps else None,
        "metric_for_best": loop.metric, "best_metric": state.best_metric, "best_step": state.best_step,
        "best_checkpoint": state.best_checkpoint, "final_model_step": final_step,
        **{f"eval_{k}": v for k, v in (dev or {}).items()},
        **{f"test_{k}": v for k, v in (test or {}).items()},
        "final_model": loop.out,
    }
    if writes_output():
        write_run_state(loop.out, state.to_dict())
    if is_main_process():
        results = write_results(loop.out, results)
        plot_training_curves(loop.out, best_step=state.best_step)
    loop.reporter.summary({k: v for k, v in results.items() if v is not None})
    loop.reporter.close()
    log("\n".join(summary_lines(results)))
    return {"global_step": state.global_step, "results": results, "state": state}


def keep_final_model(loop):
    """The model the run keeps: the best checkpoint's weights (load_best_model_at_end) or the last; exported to the
    root of output_dir. Returns its step."""
    state, out = loop.state, loop.out
    final_step = state.global_step
    if loop.cfg.get("load_best_model_at_end", True) and state.best_checkpoint and state.best_step != final_step:
        best_path = os.path.join(out, state.best_checkpoint)
        if all(all_gather(os.path.isdir(best_path))):  # each node reads its own copy: all of them, or every rank keeps the last
            apply_model_weights(loop.model, *read_model_weights(best_path))
            final_step = state.best_step
        else:
            warn_once(f"the best checkpoint {state.best_checkpoint} ({loop.metric}={state.best_metric}) is no longer in {out}: "
                      f"keeping the last model (step {final_step})")
    state.final_model_step = final_step
    log(f"final model: step {final_step} ("
        + (f"best {loop.metric}={state.best_metric}" if final_step == state.best_step else "the last step") + f"), exported to {out}")
    if writes_output():
        export_final_model(loop.model, loop.task.tokenizer, out, loop.task.extra_files)
    return final_step
