"""What the prediction CLIs share: their --output checked before any work, files written atomically, and the
metrics file that sits next to the predictions.

Imports: the standard library; of the project `configuration` (its error).
"""
import os
import sys

from paddle_finetune.errors import ConfigError


def stderr(message):
    print(message, file=sys.stderr)


def metrics_path(output):
    """Where the metrics of --output go: preds.jsonl -> preds.metrics.json."""
    return os.path.splitext(output)[0] + ".metrics.json"


def check_output(output):
    """A --output that cannot be written is found before any work."""
    if not output:
        return
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise ConfigError(f"--output {output} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise ConfigError(f"--output {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--output {output}: directory {parent} is not writable")


def remove_stale_metrics(output, scored):
    """Metrics of an earlier run next to predictions that have none would be read as theirs."""
    if output and not scored and os.path.isfile(metrics_path(output)):
        os.remove(metrics_path(output))
        stderr(f"removed {metrics_path(output)}: it held an earlier run's metrics, and these predictions have none")


def write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
