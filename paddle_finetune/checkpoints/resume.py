"""Resume policy: which checkpoint a run resumes (auto: the newest that reads, falling back past damaged
ones), and refusing a resume that cannot continue exactly (config keys outside SAFE_RESUME_KEYS, the number of
ranks, the training data), or whose max_steps is below the checkpoint.

Imports: the standard library and numpy; of the project `errors`, `checkpoints.listing`, `checkpoints.storage`
and `reporting`.
"""
import hashlib
import json
import os

import numpy as np

from paddle_finetune.checkpoints.listing import list_checkpoints
from paddle_finetune.checkpoints.storage import (
    _contents,
    _jsonable_config,
    read_checkpoint,
)
from paddle_finetune.errors import CheckpointError, ConfigError
from paddle_finetune.reporting.console import log

# Changing these between a checkpoint and its resume is allowed and logged: they only touch reporting,
# evaluation, where the run lives, or how long it goes (max_steps/num_train_epochs also stretch the LR
# decay, which is what extending a run means). Every other key is unsafe by default (resume_mismatches).
# rouge_style is left out on purpose: it defines what the dev scores mean (the styles differ by points), so the best
# so far could not be compared with the resumed run's evaluations; its name is in every metric record.
SAFE_RESUME_KEYS = frozenset({
    "max_steps", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "report_to", "eval_batch_size", "output_dir", "resume_from_checkpoint", "overwrite_output_dir",
    "wandb_project", "wandb_run_name", "max_eval_samples", "num_eval_samples_logged", "num_beams",
    "test_file", "device", "early_stopping_patience", "early_stopping_threshold", "load_best_model_at_end",
    "resume_ignore_mismatch", "converted_model_dir",
    "probe_text", "probe_answer", "probe_top_k",  # train_mlm's cloze report
    "sample_prompt", "sample_max_new_tokens",  # train_clm's sample generation
})

def resolve_resume(config, validate=None):
    """None (no resume), or the read checkpoint to resume (CheckpointContents, usable as its path).

    "auto": the newest complete checkpoint that reads, newest first, logging each one skipped and why;
    none at all starts fresh, but checkpoints that all fail to read are an error (never a silent restart).
    An explicit path that is damaged is a CheckpointError naming the file. validate(contents) may raise
    CheckpointError for what only the run can check (e.g. the position within an epoch): damage as well.
    """
    value = config.get("resume_from_checkpoint")
    if not value:
        return None
    if value != "auto":
        if not os.path.isdir(value):
            raise ConfigError(f"resume_from_checkpoint: directory not found: {value}")
        contents = read_checkpoint(value)
        if validate is not None:
            validate(contents)
        return contents
    out = config["output_dir"]
    candidates = list_checkpoints(out)[::-1]
    if not candidates:
        log(f"resume_from_checkpoint=auto: no complete checkpoint in {out}, starting fresh")
        return None
    failures = []
    for path in candidates:
        try:
            contents = read_checkpoint(path)
            if validate is not None:
                validate(contents)
        except CheckpointError as e:
            log(f"resume_from_checkpoint=auto: skipping {os.path.basename(path)}: {e}")
            failures.append(f"{os.path.basename(path)}: {e}")
            continue
        if failures:
            log(f"resume_from_checkpoint=auto: using {contents.name}, the newest checkpoint that reads")
        return contents
    raise CheckpointError(f"resume_from_checkpoint=auto: no checkpoint in {out} can be read: " + "; ".join(failures))


_UNSET = "(unset)"


def resume_mismatches(saved_config, new_config):
    """(unsafe, safe): the keys whose value differs, each (key, old, new), sorted by key. Safe keys are
    SAFE_RESUME_KEYS; every other difference (a key only one side has included) is unsafe."""
    old, new = _jsonable_config(saved_config), _jsonable_config(new_config)
    unsafe, safe = [], []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            (safe if key in SAFE_RESUME_KEYS else unsafe).append((key, a, b))
    return unsafe, safe


def data_fingerprint(features):
    """sha256 over the tokenized training features, in order: a resume on other data is refused."""
    h = hashlib.sha256()
    count = 0
    for feature in features:
        h.update(json.dumps(feature, sort_keys=True, separators=(",", ":"), default=lambda o: np.asarray(o).tolist()).encode())
        h.update(b"\n")
        count += 1
    return f"sha256:{h.hexdigest()} ({count} features)"


def _changes(items):
    def show(v):
        return v if isinstance(v, str) and v == _UNSET else json.dumps(v, ensure_ascii=False)

    return ", ".join(f"{key} {show(a)} -> {show(b)}" for key, a, b in items)


def check_resume_compatible(checkpoint, config, world_size, fingerprint, ignore_mismatch=False):
    """Refuse a resume that cannot continue exactly: config keys outside SAFE_RESUME_KEYS, the number of
    ranks, or the training data (fingerprint) changed. Returns the lines to log (allowed changes, and the
    warning when ignore_mismatch overrides a refusal); raises CheckpointError otherwise."""
    contents = _contents(checkpoint)
    unsafe, safe = resume_mismatches(contents.config, config)
    state = contents.trainer_state
    if state.get("world_size") != world_size:
        unsafe.append(("ranks", state.get("world_size"), world_size))
    if fingerprint is not None and state.get("data_fingerprint") != fingerprint:
        unsafe.append(("training data", state.get("data_fingerprint") or "(not recorded)", fingerprint))
    lines = [f"resuming from {contents.name} with changed settings (allowed): {_changes(safe)}"] if safe else []
    if unsafe:
        if not ignore_mismatch:
            raise CheckpointError(
                f"cannot resume {contents.path} exactly: {_changes(unsafe)}; restore them, or pass "
                "--resume_ignore_mismatch=True to resume anyway (the run will differ from one that never stopped)"
            )
        lines.append(f"WARNING: resume_ignore_mismatch=True: resuming {contents.name} although {_changes(unsafe)}; "
                     "the run will differ from one that never stopped")
    return lines


def check_max_steps(checkpoint_step_, max_steps, checkpoint_name="the checkpoint"):
    """A max_steps (as computed from max_steps/num_train_epochs) below the checkpoint's step is an error."""
    if max_steps < checkpoint_step_:
        raise CheckpointError(
            f"max_steps is {max_steps}, below step {checkpoint_step_} of {checkpoint_name}: raise --max_steps "
            f"(or --num_train_epochs) to at least {checkpoint_step_}, or start a new run in another output_dir"
        )


# ----------------------------------------------------------------------------
# the output directory: one run at a time, refusing a used one, touching nothing until checks pass
# ----------------------------------------------------------------------------
