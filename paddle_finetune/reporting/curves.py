"""training_curves.png: train loss, learning rate and every dev metric by step, the best step marked.

Imports: the standard library; matplotlib inside plot_training_curves; of the project `reporting.files`
and `runtime.distributed`.
"""
import math
import os
import re

from paddle_finetune.reporting.files import _read_json_dict, read_jsonl
from paddle_finetune.runtime.distributed import is_main_process
from paddle_finetune.runtime.state import note_write

# ----------------------------------------------------------------------------
# the training curves
# ----------------------------------------------------------------------------
TRAIN_LOG = "train_log.jsonl"
METRICS_LOG = "metrics.jsonl"
CURVES_FILE = "training_curves.png"
_NOT_METRICS = ("step", "epoch", "split")


def _by_step(records):
    """One record per step (the last one logged wins), sorted by step."""
    out = {}
    for r in records:
        if isinstance(r.get("step"), (int, float)) and not isinstance(r.get("step"), bool):
            out[r["step"]] = r
    return [out[s] for s in sorted(out)]


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _series(records, key):
    points = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
    return [p[0] for p in points], [p[1] for p in points]


def _best_from_state(output_dir):
    """(best step, metric_for_best) from trainer_state.json's best checkpoint, (None, None) without one."""
    state = _read_json_dict(os.path.join(output_dir, "trainer_state.json"))
    m = re.search(r"checkpoint-(\d+)$", str(state.get("best_checkpoint") or ""))
    return (int(m.group(1)) if m else None), state.get("metric_for_best")


def training_curve_panels(output_dir):
    """What plot_training_curves draws: (title, steps, values, "train"|"eval", key) per panel with data.
    Dev records only (a record whose "split" is not "dev" is a test result); the last record of a step wins."""
    train = _by_step(read_jsonl(os.path.join(output_dir, TRAIN_LOG)))
    evals = _by_step([r for r in read_jsonl(os.path.join(output_dir, METRICS_LOG)) if r.get("split", "dev") == "dev"])
    names = list(dict.fromkeys(k for r in evals for k, v in r.items() if k not in _NOT_METRICS and _is_number(v)))
    panels = [(title, *_series(train, key), "train", key) for title, key in (("train loss", "loss"), ("learning rate", "lr"))]
    panels += [(f"eval {name}", *_series(evals, name), "eval", name) for name in names]
    return [p for p in panels if p[1]]


def plot_training_curves(output_dir, out_path=None, best_step=None):
    """Train loss, learning rate and every eval metric by step, from output_dir/train_log.jsonl and
    metrics.jsonl (test records, those with a "split" other than "dev", are skipped), with the best
    step marked (default: trainer_state.json's best checkpoint). Written to out_path (default
    output_dir/training_curves.png) atomically. Returns the path, or None when there is nothing to draw."""
    if not is_main_process():
        return None
    panels = training_curve_panels(output_dir)
    if not panels:
        return None
    state_best, metric_for_best = _best_from_state(output_dir)
    best_step = state_best if best_step is None else best_step

    # No pyplot: no display, no backend switch, no global figure state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    all_steps = [s for p in panels for s in p[1]] + ([best_step] if best_step is not None else [])
    lo, hi = min(all_steps), max(all_steps)
    pad = max(1.0, 0.04 * (hi - lo))  # room for a single point and for the best-step label
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.3 * nrows + 0.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (title, steps, values, kind, key) in zip(axes, panels):
        is_best_metric = kind == "eval" and key == metric_for_best
        ax.plot(steps, values, color="tab:blue" if kind == "train" else "tab:green", linewidth=1.6,
                marker="o" if len(steps) <= 40 else None, markersize=3.5)
        ax.set_xlim(lo - pad, hi + pad)  # every panel on the same steps, so they line up
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if title == "learning rate":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        finite = [v for v in values if math.isfinite(v)]
        if kind == "train" and key == "loss" and finite and min(finite) > 0 and max(finite) / min(finite) > 100:
            ax.set_yscale("log")  # a loss that fell 100x: the late, small gains are invisible on a linear axis
            title += " (log scale)"
        if best_step is not None:
            ax.axvline(best_step, color="tab:red", linestyle="--", linewidth=1, alpha=0.6)
            if kind == "eval" and best_step in steps:
                y = values[steps.index(best_step)]
                ax.plot([best_step], [y], marker="*", color="tab:red", markersize=13, zorder=5)
                ax.annotate(f"{y:.4g}", (best_step, y), textcoords="offset points", xytext=(-8, 7), ha="right",
                            fontsize=9, color="tab:red")
        ax.set_title(title + ("  (metric for best)" if is_best_metric else ""), fontsize=11,
                     fontweight="bold" if is_best_metric else "normal")
    for ax in axes[len(panels):]:
        ax.axis("off")
    name = os.path.basename(os.path.abspath(output_dir))
    fig.suptitle(f"{name}: training curves" + (f"   best step {best_step} (red dashes)" if best_step is not None else ""), fontsize=12)
    path = out_path or os.path.join(output_dir, CURVES_FILE)
    note_write(path)
    tmp = f"{path}.tmp{os.getpid()}"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return path
