"""Resume policy: which checkpoint a run resumes (auto: the newest that reads, falling back past damaged
ones), and refusing a resume that cannot continue exactly, or whose max_steps is below the checkpoint.

What a resume compares is what changes the math, not the spelling that produced it:

* the tokenized training data (its fingerprint), and the dev data the best was chosen on (the dev features'
  fingerprint): the same rows from a .csv instead of a .jsonl, or text_column=None spelled out as "content",
  resume; the keys that only choose or shape data (DATA_KEYS) are then allowed and logged, and named beside a
  fingerprint that changed;
* the evaluation settings (evaluation.selection.EVALUATION_KEYS): a change is refused like any unsafe key, and
  with resume_ignore_mismatch the best is re-based, since earlier evaluations are no longer comparable;
* every other config key outside SAFE_RESUME_KEYS, and the number of ranks.

Imports: the standard library and numpy; of the project `errors`, `checkpoints.listing`, `checkpoints.storage`,
`evaluation.selection` and `reporting`.
"""
import hashlib
import json
import os
from typing import NamedTuple

import numpy as np

from paddle_finetune.checkpoints.listing import list_checkpoints
from paddle_finetune.checkpoints.storage import (
    _contents,
    _jsonable_config,
    read_checkpoint,
)
from paddle_finetune.errors import CheckpointError, ConfigError
from paddle_finetune.evaluation.selection import EVALUATION_KEYS
from paddle_finetune.reporting.console import log

# Changing these between a checkpoint and its resume is allowed and logged: they only touch reporting,
# where the run lives, or how long it goes (max_steps/num_train_epochs also stretch the LR decay, which is
# what extending a run means). Every other key is unsafe by default (resume_mismatches). EVALUATION_KEYS are
# never safe, whatever this set says.
SAFE_RESUME_KEYS = frozenset({
    "max_steps", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit",
    "report_to", "eval_batch_size", "output_dir", "resume_from_checkpoint", "overwrite_output_dir",
    "wandb_project", "wandb_run_name", "num_eval_samples_logged",
    "test_file", "device", "early_stopping_patience", "early_stopping_threshold", "load_best_model_at_end",
    "resume_ignore_mismatch", "converted_model_dir",
    "probe_text", "probe_answer", "probe_top_k",  # train_mlm's cloze report
    "sample_prompt", "sample_max_new_tokens",  # train_clm's sample generation
})

# Keys that only choose or shape the training and dev data: resume compares the data they produce (its
# fingerprints), not them.
DATA_KEYS = frozenset({
    "train_file", "dev_file", "dataset_name", "dataset_config_name", "text_column", "summary_column",
    "label_column", "text_pair_column", "has_header", "skip_bad_rows", "max_train_samples", "max_eval_samples",
    "dev_size",
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
_NOT_CHECKED = object()


class Mismatches(NamedTuple):
    """The keys whose value differs between a checkpoint's config and a resume's, each (key, old, new), by key."""

    unsafe: list  # refused (unless resume_ignore_mismatch)
    safe: list  # allowed and logged (SAFE_RESUME_KEYS)
    data: list  # allowed when the data they produce is the same (DATA_KEYS)


def resume_mismatches(saved_config, new_config):
    """Mismatches of two configs. Safe keys are SAFE_RESUME_KEYS (never an EVALUATION_KEY), data keys DATA_KEYS;
    every other difference (a key only one side has included) is unsafe."""
    old, new = _jsonable_config(saved_config), _jsonable_config(new_config)
    found = Mismatches([], [], [])
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _UNSET), new.get(key, _UNSET)
        if a != b:
            kind = ("unsafe" if key in EVALUATION_KEYS else "safe" if key in SAFE_RESUME_KEYS
                    else "data" if key in DATA_KEYS else "unsafe")
            getattr(found, kind).append((key, a, b))
    return found


def data_fingerprint(features):
    """sha256 over the tokenized features, in order: a resume on other data is refused."""
    h = hashlib.sha256()
    count = 0
    for feature in features:
        h.update(json.dumps(feature, sort_keys=True, separators=(",", ":"), default=lambda o: np.asarray(o).tolist()).encode())
        h.update(b"\n")
        count += 1
    return f"sha256:{h.hexdigest()} ({count} features)"


def _changes(items):
    def show(v):
        return v if isinstance(v, str) and v in (_UNSET, "(not recorded)", "(none)") else json.dumps(v, ensure_ascii=False)

    return ", ".join(f"{key} {show(a)} -> {show(b)}" for key, a, b in items)


def _dev_change(contents, config, dev_fingerprint):
    """("dev data", old, new) when the checkpoint's dev data (its train state's record) is not this run's, else None.

    A checkpoint from before dev fingerprints has no record: its dev data is taken as this run's when every key
    that chooses data (DATA_KEYS) is unchanged (the content at a path cannot be checked), else as other data."""
    saved = contents.trainer_state.get("train_state") or {}
    if "dev_fingerprint" not in saved:
        if resume_mismatches(contents.config, config).data:
            return "dev data", "(not recorded)", dev_fingerprint or "(none)"
        return None
    if saved["dev_fingerprint"] != dev_fingerprint:
        return "dev data", saved["dev_fingerprint"] or "(none)", dev_fingerprint or "(none)"
    return None


def _has_comparisons(saved_state):
    """Whether the checkpoint's evaluations set a best or counted patience: something later ones are compared with."""
    return saved_state.get("best_metric") is not None or bool(saved_state.get("evals_without_improvement"))


def evaluation_changes(checkpoint, config, dev_fingerprint):
    """What makes the checkpoint's evaluations incomparable with this run's, each (key, old, new): a changed
    EVALUATION_KEY, or other dev data (dev_fingerprint: this run's dev features' fingerprint, None without dev;
    a checkpoint without a record, from an older version: see _dev_change). [] when the checkpoint has no
    evaluation to compare with (no best, no patience counted)."""
    contents = _contents(checkpoint)
    saved = contents.trainer_state.get("train_state") or {}
    if not _has_comparisons(saved):
        return []
    old, new = _jsonable_config(contents.config), _jsonable_config(config)
    changes = [(key, old.get(key, _UNSET), new.get(key, _UNSET)) for key in sorted(EVALUATION_KEYS)
               if old.get(key, _UNSET) != new.get(key, _UNSET)]
    dev = _dev_change(contents, config, dev_fingerprint)
    return changes + ([dev] if dev else [])


def _nothing_to_compare(contents, config, unsafe, dev_fingerprint):
    """(unsafe without the evaluation changes, the line allowing them) for a checkpoint with no evaluation to
    compare with: other evaluation settings or dev data change no comparison there."""
    saved = contents.trainer_state.get("train_state") or {}
    if _has_comparisons(saved):
        return unsafe, None
    idle = [c for c in unsafe if c[0] in EVALUATION_KEYS]
    dev = _dev_change(contents, config, dev_fingerprint)
    idle += [dev] if dev and (saved.get("dev_fingerprint") or dev_fingerprint) else []
    if not idle:
        return unsafe, None
    return ([c for c in unsafe if c[0] not in EVALUATION_KEYS],
            f"resuming from {contents.name} with other evaluation settings or dev data (allowed: it has no evaluation "
            f"to compare with): {_changes(idle)}")


def check_resume_compatible(checkpoint, config, world_size, fingerprint, ignore_mismatch=False, dev_fingerprint=_NOT_CHECKED):
    """Refuse a resume that cannot continue exactly: config keys outside SAFE_RESUME_KEYS and DATA_KEYS, the
    number of ranks, the training data (fingerprint), or -- when the checkpoint has evaluations to compare with --
    the evaluation settings or the dev data (dev_fingerprint; not given: evaluation keys are simply unsafe)
    changed. Returns the lines to log (allowed changes, and the warning when ignore_mismatch overrides a refusal);
    raises CheckpointError otherwise."""
    contents = _contents(checkpoint)
    unsafe, safe, data = resume_mismatches(contents.config, config)
    state = contents.trainer_state
    if state.get("world_size") != world_size:
        unsafe.append(("ranks", state.get("world_size"), world_size))
    other_data = []
    if fingerprint is not None and state.get("data_fingerprint") != fingerprint:
        other_data.append(("training data", state.get("data_fingerprint") or "(not recorded)", fingerprint))
    lines = [f"resuming from {contents.name} with changed settings (allowed): {_changes(safe)}"] if safe else []
    evaluation = []
    if dev_fingerprint is not _NOT_CHECKED:
        evaluation = evaluation_changes(contents, config, dev_fingerprint)
        unsafe, allowed = _nothing_to_compare(contents, config, unsafe, dev_fingerprint)
        lines += [allowed] if allowed else []
        if "dev_fingerprint" not in (state.get("train_state") or {}) and _has_comparisons(state.get("train_state") or {}) \
                and not any(c[0] == "dev data" for c in evaluation):
            lines.append(f"{contents.name} predates dev data fingerprints: its dev data is taken as this run's, since "
                         "no key that chooses data changed (the rows at the same path are not checked)")
    other_data += [c for c in evaluation if c[0] == "dev data"]
    unsafe += [c for c in evaluation if c[0] != "dev data" and c not in unsafe] + other_data
    if data and not other_data:
        lines.append(f"resuming from {contents.name} with the same tokenized data read another way (allowed): {_changes(data)}")
    if unsafe:
        cause = f" (with {_changes(data)})" if data and other_data else ""
        rebase = (" (the best is then re-based: earlier evaluations scored other dev data or settings and are no "
                  "longer compared)") if evaluation else ""
        if not ignore_mismatch:
            raise CheckpointError(
                f"cannot resume {contents.path} exactly: {_changes(unsafe)}{cause}; restore them, or pass "
                f"--resume_ignore_mismatch=True to resume anyway{rebase} (the run will differ from one that never stopped)"
            )
        lines.append(f"WARNING: resume_ignore_mismatch=True: resuming {contents.name} although {_changes(unsafe)}{cause}; "
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
