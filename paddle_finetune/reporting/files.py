"""The files a run leaves for people and programs: JSON written atomically, the JSONL logs
(train_log.jsonl, metrics.jsonl) and their truncation on resume, all_results.json with its HF-style parts,
and the end-of-run summary block.

Imports: the standard library; of the project `reporting.console`, `reporting.progress` (durations) and
`runtime.distributed`.
"""
import json
import os

from paddle_finetune.reporting.console import scrub_temp_paths, warn
from paddle_finetune.reporting.progress import _duration
from paddle_finetune.runtime.distributed import is_main_process
from paddle_finetune.runtime.state import note_write


# ----------------------------------------------------------------------------
# result files
# ----------------------------------------------------------------------------
def write_json_atomic(path, obj):
    """A reader (or a kill) never sees half a file: write a temp file, fsync, rename over."""
    note_write(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_jsonl(path, record):
    if not is_main_process():
        return
    note_write(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _jsonl_record(line):
    """One JSONL line as a dict; None for a line a SIGKILL cut in half (or anything not an object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_jsonl(path):
    """The records of a JSONL log, skipping blank and broken lines; [] for a missing file."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return [r for r in map(_jsonl_record, f) if r is not None]


def _jsonl_step(line):
    record = _jsonl_record(line)
    return None if record is None else record.get("step", 0)


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


def _plain(value):
    """numpy and paddle scalars as Python numbers, so JSON and wandb get numbers, not their repr."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _read_json_dict(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as e:
        warn(f"{path} is unreadable ({e}); rewriting it")
        return {}


# key prefix -> the HF-style file it also goes to (all of them go to all_results.json)
RESULT_FILES = (("train_", "train_results.json"), ("eval_", "eval_results.json"),
                ("test_", "predict_results.json"), ("predict_", "predict_results.json"))


def write_results(output_dir, results):
    """all_results.json (merged into an existing one, as HF's save_metrics does) and, for the keys with a
    train_/eval_/test_/predict_ prefix, train_results.json / eval_results.json / predict_results.json
    (merged the same way). Each file is written atomically. Returns the merged all_results dict (rank 0)."""
    if not is_main_process():
        return {}
    results = {k: _plain(v) for k, v in results.items()}
    files = {"all_results.json": results}
    for prefix, name in RESULT_FILES:
        part = {k: v for k, v in results.items() if k.startswith(prefix)}
        if part:
            files[name] = {**files.get(name, {}), **part}
    merged = {}
    for name, values in files.items():
        path = os.path.join(output_dir, name)
        merged[name] = {**_read_json_dict(path), **values}
        write_json_atomic(path, merged[name])
    return merged["all_results.json"]


_TIMING_SUFFIXES = ("_runtime", "_samples_per_second", "_steps_per_second", "_tokens_per_second")


def _number(value):
    """A result for people: 378, 6, 99.9012, 0.1235, 3e-05."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if abs(value) < 1e-2 or abs(value) >= 1e5:
        return f"{value:.4g}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def _metrics_text(results, prefixes, notes=()):
    """"rouge1=40.1, rougeL=37.2, loss=2.31 (rouge_style chars, step 378)": the numbers, then the labels saying how
    they were computed (string values such as eval_rouge_style) and any other notes; "" without numbers."""
    items = [(k.split("_", 1)[1], v) for k, v in results.items()
             if k.startswith(prefixes) and not k.endswith(_TIMING_SUFFIXES) and not isinstance(v, (dict, list))]
    text = ", ".join(f"{k}={_number(v)}" for k, v in items if not isinstance(v, str))
    notes = [f"{k} {v}" for k, v in items if isinstance(v, str)] + [n for n in notes if n]
    return f"{text} ({', '.join(notes)})" if text and notes else text


def summary_lines(results):
    """The end-of-run block the engine logs: log("\\n".join(summary_lines(results))).

    Reads (each optional): train_steps, epoch, train_runtime (s), train_tokens_per_second, train_loss;
    metric_for_best, best_metric, best_step, best_checkpoint; final_model (and final_model_step);
    eval_<metric> (the final model's dev metrics); test_<metric> or predict_<metric>. None counts as absent.
    """
    results = {k: v for k, v in results.items() if v is not None}
    lines = ["summary:"]
    head = " ".join(part for part in (
        f"{_number(results['train_steps'])} steps" if "train_steps" in results else "",
        f"({_number(results['epoch'])} epochs)" if "epoch" in results else "",
        f"in {_duration(float(results['train_runtime']))}" if "train_runtime" in results else "",
    ) if part)
    trained = [part for part in (
        head,
        f"{float(results['train_tokens_per_second']):,.0f} tokens/s" if "train_tokens_per_second" in results else "",
        f"final loss {_number(results['train_loss'])}" if "train_loss" in results else "",
    ) if part]
    if trained:
        lines.append(f"  trained      {', '.join(trained)}")
    if results.get("best_metric") is not None:
        best = f"{results.get('metric_for_best') or 'metric'}={_number(results['best_metric'])}"
        if results.get("best_step") is not None:
            best += f" at step {_number(results['best_step'])}"
        if results.get("best_checkpoint"):
            best += f" ({results['best_checkpoint']})"
        # A label "<family>_style" (eval_rouge_style) says how the metrics named <family>... were computed.
        styles = [f"{k[len('eval_'):]} {v}" for k, v in results.items() if k.startswith("eval_") and k.endswith("_style")
                  and isinstance(v, str) and str(results.get("metric_for_best")).startswith(k[len("eval_"):-len("_style")])]
        if styles:
            best += f" ({', '.join(styles)})"
        lines.append(f"  best         {best}")
    at = f"step {_number(results['final_model_step'])}" if "final_model_step" in results else ""
    evaluated = _metrics_text(results, ("eval_",), [at])
    if evaluated:
        lines.append(f"  dev          {evaluated}")
    tested = _metrics_text(results, ("test_", "predict_"))
    if tested:
        lines.append(f"  test         {tested}")
    if results.get("final_model"):
        at = f" (step {_number(results['final_model_step'])})" if "final_model_step" in results else ""
        lines.append(f"  final model  {results['final_model']}{at}")
    return [scrub_temp_paths(line) for line in lines] if len(lines) > 1 else []
