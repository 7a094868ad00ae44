"""What the prediction CLIs share: their --output checked before any work (the ownership rule: never an input,
an existing file replaced only when it is an earlier unchanged output of the same tool, or with --overwrite),
files written atomically and recorded as the tool's, and the metrics file that sits next to the predictions.

Imports: the standard library; of the project `errors`, `checkpoints.files`, `checkpoints.listing` and
`checkpoints.ownership`.
"""
import os
import sys

from paddle_finetune.checkpoints.files import COMPLETE_MARKER
from paddle_finetune.checkpoints.listing import choose_model_dir
from paddle_finetune.checkpoints.ownership import (
    check_output_file,
    forget_output_file,
    real,
    record_output_file,
)
from paddle_finetune.errors import ConfigError


def stderr(message):
    print(message, file=sys.stderr)


def metrics_path(output):
    """Where the metrics of --output go: preds.jsonl -> preds.metrics.json."""
    return os.path.splitext(output)[0] + ".metrics.json"


# What a model directory's model is made of (weights, configs, tokenizer, label map, the run's state): never an
# --output. Other files beside a final model (an earlier prediction written into its output_dir) are not the model.
MODEL_FILES = frozenset({
    "config.json", "model_config.json", "generation_config.json", "model.safetensors.index.json", "vocab.txt",
    "vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "sentencepiece.bpe.model", "spiece.model", "chat_template.json", "label_map.json",
    "train_config.json", "trainer_state.json",
})


def _model_inputs(model):
    """(label, path) of what a prediction reads of its MODEL: each file of the model directory, and the directory
    itself when it is a checkpoint (a file added there would go with it when it is rotated away)."""
    try:
        model_dir, _ = choose_model_dir(model)
    except Exception:  # noqa: BLE001 - no model there: the load reports it, with its own message
        return [("MODEL", model)] if model else []
    inputs = [("a file of the model", os.path.join(model_dir, n)) for n in sorted(os.listdir(model_dir))
              if n in MODEL_FILES or n.endswith((".safetensors", ".pdparams"))]
    if os.path.lexists(os.path.join(model_dir, COMPLETE_MARKER)):
        inputs.append(("the checkpoint", model_dir))
    return inputs


def check_output(output, tool=None, input_path=None, model=None, overwrite=False):
    """A --output that cannot be written, or may not be, is found before any work: its folder must exist and be
    writable; it and its metrics file are checked with ownership.check_output_file (never INPUT or a file of the
    model; an existing one only when the tool wrote it and it is unchanged, or with --overwrite)."""
    if not output:
        return
    parent = os.path.dirname(os.path.abspath(output))
    if os.path.isdir(output):
        raise ConfigError(f"--output {output} is a directory; give a file name")
    if not os.path.isdir(parent):
        raise ConfigError(f"--output {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"--output {output}: directory {parent} is not writable")
    if tool is None:
        return
    inputs = ([("INPUT", input_path)] if input_path else []) + _model_inputs(model)
    check_output_file(output, tool=tool, inputs=inputs, overwrite=overwrite)
    if real(metrics_path(output)) == real(output):
        raise ConfigError(f"--output {output}: its metrics file would be the output itself; give a name with an extension")
    check_output_file(metrics_path(output), tool=tool, inputs=inputs, overwrite=overwrite,
                      flag="the metrics file of --output")


def remove_stale_metrics(output, scored, tool=None):
    """Metrics of an earlier run next to predictions that have none would be read as theirs (removed only when
    check_output allowed it: the tool's own unchanged file, or --overwrite)."""
    if output and not scored and os.path.isfile(metrics_path(output)):
        os.remove(metrics_path(output))
        forget_output_file(metrics_path(output))
        stderr(f"removed {metrics_path(output)}: it held an earlier run's metrics, and these predictions have none")


def write_atomic(path, text, tool=None, **meta):
    """Write through a temp file and rename; with `tool`, record the file as that tool's output (ownership)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    if tool is not None:
        record_output_file(path, tool=tool, **meta)

