"""What a run tells its user: log lines, progress bars, JSON/JSONL result files and wandb.

Only rank 0 reports. Log lines go through tqdm.write so they never break a progress bar.

Imports: the standard library, numpy-free; tqdm and wandb lazily; of the project only `distributed`.
"""
import json
import os
import pprint
import sys
import time

from distributed import is_main_process


def log(msg):
    if is_main_process():
        from tqdm import tqdm

        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stdout)
        sys.stdout.flush()


_warned = set()


def warn_once(msg):
    if msg not in _warned:
        _warned.add(msg)
        log(f"WARNING: {msg}")


def describe_config(config):
    log("config:\n" + pprint.pformat(config, sort_dicts=False, width=110))


def progress_bar(total, desc, initial=0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not is_main_process(), dynamic_ncols=True, mininterval=1.0)


# ----------------------------------------------------------------------------
# result files
# ----------------------------------------------------------------------------
def write_json_atomic(path, obj):
    """A reader (or a kill) never sees half a file: write a temp file, fsync, rename over."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path, record):
    if not is_main_process():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _jsonl_step(line):
    """The step of one log line; None for a line a SIGKILL cut in half."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return None


def truncate_jsonl(path, max_step):
    """After a resume, drop records a killed run logged past its last checkpoint."""
    if not is_main_process() or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if _jsonl_step(line) is not None and _jsonl_step(line) <= max_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------
# wandb
# ----------------------------------------------------------------------------
def wandb_has_credentials():
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def init_reporting(config, run_id=None):
    """Start wandb when asked; with no credentials it runs offline and says how to sync.

    run_id (saved in every checkpoint) makes a resumed run continue the same wandb run.
    """
    targets = [t.strip() for t in str(config.get("report_to", "")).split(",") if t.strip() and t.strip() != "none"]
    if "wandb" not in targets or not is_main_process():
        return None
    try:
        import wandb
    except ImportError:
        warn_once("report_to includes wandb but wandb is not installed: pip install wandb")
        return None
    if not wandb_has_credentials() and os.environ.get("WANDB_MODE") not in ("disabled", "offline"):
        os.environ["WANDB_MODE"] = "offline"
    run = wandb.init(
        project=config.get("wandb_project") or "paddle-finetune",
        name=config.get("wandb_run_name") or None,
        dir=config["output_dir"],
        config=config,
        id=run_id,
        resume="allow",
    )
    if os.environ.get("WANDB_MODE") == "offline":
        log(f"wandb: no credentials found, logging offline to {os.path.dirname(run.dir)}; upload later with: wandb sync {os.path.dirname(run.dir)}")
    return run


def report(run, metrics, step):
    if run is not None:
        run.log(metrics, step=step)


def report_table(run, name, columns, rows, step):
    if run is not None:
        import wandb

        run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)
