"""Checkpoints and the output directory: atomic saves (temp dir, completion marker, rename),
loading them back for an exact resume, rotation that keeps the best and the newest, and the
policy for a non-empty output_dir.

A checkpoint holds the model (save_pretrained), tokenizer, optimizer, LR scheduler, GradScaler,
the train state (step, epoch position, best so far) and every RNG, plus the merged config.

Imports: the standard library; of the project `configuration` (errors), `distributed`, `reporting`
and `rng`; paddle inside the functions.
"""
import json
import os
import re
import shutil

from configuration import ConfigError
from distributed import get_world_size, is_main_process
from reporting import log, write_json_atomic
from rng import get_rng_state

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
TRAINER_STATE_FILE = "trainer_state.pdparams"
OPTIMIZER_FILE = "optimizer.pdopt"
TRAIN_CONFIG_FILE = "train_config.json"
RANK_RNG_FILE = "rng_state_rank{rank}.pdstate"  # ranks > 0; rank 0's RNG is in TRAINER_STATE_FILE


def save_config(config, output_dir, name=TRAIN_CONFIG_FILE):
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, name), config)


def unwrap_model(model):
    """The bare model inside DataParallel and the loss wrapper."""
    while hasattr(model, "_layers") or hasattr(model, "inner_model"):
        model = getattr(model, "_layers", None) or getattr(model, "inner_model")
    return model


def checkpoint_step(name):
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir):
    """Complete checkpoints, oldest first. Half-written ones lack the marker and are invisible."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = checkpoint_step(name)
        path = os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
            found.append((step, path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir):
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_model_files(model, tokenizer, directory, extra_files=None):
    """The one place a model is unwrapped and saved: checkpoints and final exports both use it."""
    os.makedirs(directory, exist_ok=True)
    unwrap_model(model).save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for name, content in (extra_files or {}).items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2))


def save_checkpoint(output_dir, step, model, tokenizer, optimizer, lr_scheduler, scaler, train_state, config, extra_files=None):
    """Atomic: a crash at any point leaves either the old checkpoint set or the new one complete."""
    import paddle

    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_files(model, tokenizer, tmp, extra_files)
    paddle.save(optimizer.state_dict(), os.path.join(tmp, OPTIMIZER_FILE))
    paddle.save(
        {
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "train_state": train_state,
            "rng": get_rng_state(),
        },
        os.path.join(tmp, TRAINER_STATE_FILE),
    )
    write_json_atomic(os.path.join(tmp, TRAIN_CONFIG_FILE), config)
    write_json_atomic(os.path.join(tmp, "train_state.json"), train_state)
    for rank in range(1, get_world_size()):
        os.replace(rank_rng_path(output_dir, step, rank), os.path.join(tmp, RANK_RNG_FILE.format(rank=rank)))
    with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
        f.write(f"step {step}\n")
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final):
        # Re-saving the same step (e.g. a signal right after a save): swap, never leave a gap.
        old = final + f".old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def rank_rng_path(output_dir, step, rank):
    return os.path.join(output_dir, f".tmp-rng-{step}-rank{rank}.pdstate")


def save_rank_rng(output_dir, step, rank):
    import paddle

    # Nested like TRAINER_STATE_FILE: paddle.load turns a top-level dict's arrays into tensors,
    # which fails on numpy's uint32 RNG key.
    paddle.save({"rng": get_rng_state()}, rank_rng_path(output_dir, step, rank))


def load_rank_rng(checkpoint, rank, default):
    """Rank r's own RNG state when the checkpoint has one (data parallel), else rank 0's."""
    import paddle

    path = os.path.join(checkpoint, RANK_RNG_FILE.format(rank=rank))
    return paddle.load(path)["rng"] if rank > 0 and os.path.isfile(path) else default


def rotate_checkpoints(output_dir, save_total_limit, keep):
    """Delete the oldest checkpoints beyond the limit, never one in `keep` (the best) nor the newest."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    ckpts = list_checkpoints(output_dir)
    protected = {os.path.abspath(p) for p in keep if p} | {os.path.abspath(p) for p in ckpts[-1:]}
    remaining, removed = list(ckpts), []
    for path in ckpts:  # oldest first
        if len(remaining) <= save_total_limit:
            break
        if os.path.abspath(path) in protected:
            continue
        # Drop the marker first: a crash mid-delete must not leave a "complete" torso.
        os.remove(os.path.join(path, COMPLETE_MARKER))
        shutil.rmtree(path, ignore_errors=True)
        remaining.remove(path)
        removed.append(path)
    return removed


def clean_stale_temp_dirs(output_dir):
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".tmp-{CHECKPOINT_PREFIX}") or (checkpoint_step(name.split(".old-")[0]) is not None and ".old-" in name):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".tmp-rng-"):
            os.remove(path)


def load_checkpoint(path, model, optimizer, lr_scheduler, scaler):
    import paddle

    if not os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
        raise ConfigError(f"resume_from_checkpoint: {path} is not a complete checkpoint (no {COMPLETE_MARKER})")
    weights = [f for f in os.listdir(path) if f.endswith(".pdparams") and f != TRAINER_STATE_FILE]
    if not weights:
        raise ConfigError(f"resume_from_checkpoint: no model weights in {path}")
    unwrap_model(model).set_state_dict(paddle.load(os.path.join(path, weights[0])))
    optimizer.set_state_dict(paddle.load(os.path.join(path, OPTIMIZER_FILE)))
    state = paddle.load(os.path.join(path, TRAINER_STATE_FILE))
    lr_scheduler.set_state_dict(state["lr_scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


def resolve_model_dir(path):
    """For prediction CLIs: a model directory as given, or an output_dir: its best checkpoint, else its newest."""
    from data_utils import DataError

    if os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(os.path.join(path, "model_config.json")):
        return path
    state_file = os.path.join(path, "trainer_state.json")
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as f:
            best = json.load(f).get("best_checkpoint")
        if best and os.path.isdir(best):
            return best
    newest = latest_checkpoint(path)
    if newest is None:
        raise DataError(f"no model found in {path}: pass a checkpoint-<step> directory, a model directory or an output_dir")
    return newest


def resolve_resume(config):
    value = config.get("resume_from_checkpoint")
    if not value:
        return None
    if value == "auto":
        path = latest_checkpoint(config["output_dir"])
        if path is None:
            log(f"resume_from_checkpoint=auto: no complete checkpoint in {config['output_dir']}, starting fresh")
        return path
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: directory not found: {value}")
    return value


def open_output_dir(config):
    """Once the data has passed its checks: create output_dir, drop half-written temp dirs, save the config.

    Bad data stops a run before this, so a fixed rerun is not refused as a non-empty output_dir.
    """
    os.makedirs(config["output_dir"], exist_ok=True)
    clean_stale_temp_dirs(config["output_dir"])
    if is_main_process():
        save_config(config, config["output_dir"])


def check_output_dir(config):
    """Refuse to mix a new run into an old one's files unless asked to resume or overwrite."""
    out = config["output_dir"]
    previous = [n for n in (os.listdir(out) if os.path.isdir(out) else []) if n != "wandb" and not n.startswith(".")]
    if not previous or config.get("resume_from_checkpoint"):
        return
    if not config.get("overwrite_output_dir"):
        raise ConfigError(
            f"output_dir {out} is not empty ({', '.join(sorted(previous)[:5])}{', ...' if len(previous) > 5 else ''}); "
            "nothing was changed. Resume with --resume_from_checkpoint=auto, pick another --output_dir, "
            "or pass --overwrite_output_dir=True to replace it"
        )
    if is_main_process():
        log(f"overwrite_output_dir=True: clearing previous run files in {out}")
        for name in previous:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
