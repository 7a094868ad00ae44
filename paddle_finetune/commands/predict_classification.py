"""Classify texts with a model trained by train_classification.py, and score it when the input has labels.

    python tools/predict_classification.py output/classification texts.txt
    python tools/predict_classification.py output/classification/checkpoint-120 "上海足球联赛迎来新变化"
    python tools/predict_classification.py output/classification test.tsv --output=preds.jsonl      # header text<TAB>label: scored
    python tools/predict_classification.py CKPT data.tsv --text_column=1 --label_column=2 --output=preds.jsonl   # no header

MODEL: an output_dir (its final model at the root, else its best checkpoint, else its newest), a
checkpoint-<step> directory or a model directory; which one is used is printed on stderr. Weights are
read without unpickling; the label names are the model's own (label_map.json). --inference_model DIR predicts
with a model tools/export_inference.py exported instead (Paddle Inference on the CPU; the same labels).

INPUT is a file, read with the rules train_classification.py reads its data with (a bad row -- malformed,
missing column, empty text, null/NaN, not UTF-8, a wrong number of fields such as an extra tab -- stops
with file:line, or is skipped and counted with --skip_bad_rows), or else the text itself:
  .txt             one text a line, or one text pair a line split at a TAB (the first line decides which the
                   file holds; a line that differs is a bad row); no labels
  .json / .jsonl   rows are objects: columns by name
  .csv / .tsv      with a header row: columns by name. Without one: columns by 0-based index only, so give
                   --text_column (and --label_column, --text_pair_column) as numbers.
Columns: --text_column defaults to "text", as in training. Gold labels are read from --label_column, or
from a column named "label" when the file has one; --label_column="" turns scoring off. A gold label the
model does not know is an error naming the file (the model could never predict it).

Outputs:
  predictions  with --output: JSON lines {"text"[, "text_pair"][, "gold_label"], "prediction", "probability"}
               in input order (written whole, through a temporary file). Without --output: one line per
               input on stdout, `predicted label<TAB>probability<TAB>text`.
  metrics      with gold labels: accuracy and macro_f1 (0-100, as in training), per-class precision, recall,
               F1 and support, the confusion matrix (rows gold, columns predicted) and row counts, over the
               rows with a non-empty gold label. Accuracy and macro-F1 are printed on stderr; with --output
               everything is also saved next to it as <output without its extension>.metrics.json
               (--output=preds.jsonl -> preds.metrics.json); without gold labels an earlier file of that
               name is removed, so it is never read as these predictions' metrics.
A model trained on text pairs needs pairs (--text_pair_column, or TABs in a .txt), one trained on single
texts needs single texts (train_config.json in the model directory says which).
--output never writes over an input (INPUT, a file of MODEL, anything inside a checkpoint; real paths compared).
An existing --output or metrics file is replaced only when this tool wrote it and it is unchanged since (recorded
in .paddle_finetune_owned.json beside it), or with --overwrite.
Exit status: 0, or 2 with one `error: ...` line on stderr (nothing is written then).
"""
import argparse
import json
import os
import sys

from paddle_finetune.commands.output import (
    check_output,
    metrics_path,
    remove_stale_metrics,
    stderr,
    write_atomic,
)
from paddle_finetune.checkpoints.ownership import real
from paddle_finetune.configuration.rules import check_max_lengths
from paddle_finetune.data.examples import column_names, normalize_column, read_examples
from paddle_finetune.data.readers import SUPPORTED_EXTENSIONS, check_data_file, iter_rows
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.evaluation.classification import classification_report
from paddle_finetune.models.loading import load_trained, usable_positions
from paddle_finetune.reporting.console import console_on_stderr, quiet_libraries
from paddle_finetune.runtime.environment import evaluation_math, record_launch_env
from paddle_finetune.tasks.classification import (
    PREDICTION_DEFAULTS,
    label_names_of,
    predict_probabilities,
    tokenize_rows,
)


TOOL = "predict_classification"  # whose outputs --output may replace (checkpoints.ownership)

def resolve_columns(path, text_column, text_pair_column, label_column):
    """({role: column}, how they were chosen) for a file with columns: "text"[, "text_pair"][, "label"]."""
    text = normalize_column(text_column) if text_column is not None else "text"
    label = normalize_column(label_column) if label_column not in (None, "") else label_column
    columns = {"text": text}
    if text_pair_column is not None:
        columns["text_pair"] = normalize_column(text_pair_column)
    if text_column is None or label is None:
        names = column_names(path) if isinstance(text, str) else None
        if text_column is None and "text" not in names:
            raise DataError(f"{path}: no column 'text' among {names}; set --text_column "
                            "(a name, or a 0-based index for a file without a header)")
        if label is None and names is not None and "label" in names:
            label = "label"
    if label not in (None, ""):
        columns["label"] = label
    how = f"text {text!r}" + (f", text pair {columns['text_pair']!r}" if "text_pair" in columns else "")
    how += (f", gold label {label!r}" + (" (detected)" if label_column is None else "")) if "label" in columns \
        else ", no label column (no accuracy)"
    return columns, how


def read_txt(path, skip_bad_rows=False):
    """Rows of a .txt file: one text a line, or with a TAB in the first line, one text pair a line. A line that
    is not like the first (a pair among single texts, or the other way round) or has an empty side is a bad row."""
    bad = []
    on_error = bad.append if skip_bad_rows else None
    rows, pairs = [], None
    for line_no, (line,) in iter_rows(path, has_header=False, on_error=on_error):
        parts = [p.strip() for p in line.strip().split("\t", 1)] if "\t" in line.strip() else [line.strip()]
        pairs = len(parts) == 2 if pairs is None else pairs
        problem = None
        if (len(parts) == 2) != pairs:
            problem = ("a text pair (a TAB) among single texts" if len(parts) == 2 else "a single text among text pairs "
                       "(no TAB)") + "; the first line sets which a file holds"
        elif not all(parts):
            problem = "an empty text in the pair"
        if problem:
            error = DataError(f"{path}:{line_no}: {problem}")
            if on_error is None:
                raise error
            on_error(error)
            continue
        rows.append(dict(zip(("text", "text_pair"), parts)))
    if bad:
        stderr(f"skip_bad_rows: skipped {len(bad)} bad row(s) in {path}; first: {bad[0]}")
    if not rows:
        raise DataError(f"{path}: no usable rows" + (f" ({len(bad)} skipped as bad)" if bad else ""))
    return rows


def read_inputs(path_or_text, text_column, text_pair_column, label_column, skip_bad_rows=False):
    """(rows {"text"[, "text_pair"][, "label"]}, the gold label column or None) from a file, or one row from literal text."""
    if os.path.lexists(path_or_text) and not os.path.isfile(path_or_text):
        check_data_file(path_or_text)  # a directory, FIFO or device: named, not predicted on as a literal text
    if not os.path.isfile(path_or_text):
        if os.path.splitext(path_or_text)[1].lower() in SUPPORTED_EXTENSIONS:
            raise DataError(f"input file not found: {path_or_text}")
        if label_column not in (None, ""):
            raise ConfigError("--label_column needs an input file; the input is a literal text")
        return [{"text": path_or_text}], None
    if path_or_text.lower().endswith(".txt"):
        if text_column not in (None, 0, "0") or any(c not in (None, "") for c in (text_pair_column, label_column)):
            raise ConfigError(f"{path_or_text}: a .txt file is one text a line (a TAB before a pair's second text), "
                              "without columns or labels; drop the column options, or use a .tsv/.csv/.jsonl file")
        rows = read_txt(path_or_text, skip_bad_rows)
        stderr(f"input: {len(rows)} rows from {path_or_text} (one text a line"
               + (", text pairs split at the TAB)" if "text_pair" in rows[0] else ")"))
        return rows, None
    columns, how = resolve_columns(path_or_text, text_column, text_pair_column, label_column)
    rows = read_examples(path_or_text, columns, skip_bad_rows=skip_bad_rows, allow_empty=("label",), log=stderr)
    stderr(f"input: {len(rows)} rows from {path_or_text}; columns: {how}")
    return rows, columns.get("label")


def check_pairs(rows, model_dir, cfg):
    """Text pairs for a model trained on pairs, single texts for one trained on single texts (train_config.json
    says which); the other way round it would still predict, wrongly."""
    if not os.path.isfile(os.path.join(model_dir, "train_config.json")):
        return  # not trained here: nothing says
    trained, given = cfg.get("text_pair_column") is not None, "text_pair" in rows[0]
    if trained and not given:
        raise ConfigError(f"{model_dir} was trained on text pairs (text_pair_column={cfg['text_pair_column']!r}): give "
                          "--text_pair_column, or a TAB between the two texts of a .txt line")
    if given and not trained:
        raise ConfigError(f"{model_dir} was trained on single texts, but the input holds text pairs")


def check_gold_labels(rows, label_names, source):
    unknown = sorted({r["label"] for r in rows if r["label"]} - set(label_names))
    if unknown:
        raise DataError(f"{source}: gold label(s) {unknown[:5]} are not among the model's labels {label_names[:20]}: "
                        "it can never predict them; fix the labels, or pass --label_column=\"\" to predict without scoring")


def score(rows, predicted, label_names):
    """Accuracy, macro-F1, per-class scores and the confusion matrix over the rows with a gold label."""

    index = {name: i for i, name in enumerate(label_names)}
    scored = [i for i, r in enumerate(rows) if r["label"]]
    metrics = {"rows": len(rows), "scored_rows": len(scored), "labels": label_names}
    if scored:
        metrics.update(classification_report([index[rows[i]["label"]] for i in scored], [predicted[i] for i in scored],
                                             label_names))
    return metrics


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its data."""
    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="predict_classification.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="MODEL", nargs="?",
                        help="output_dir, checkpoint-<step> directory or model directory (or give --inference_model)")
    parser.add_argument("input", metavar="INPUT", help=".txt, .json, .jsonl, .csv or .tsv file, or a text to classify")
    parser.add_argument("--text_column", default=None,
                        help="name, or 0-based index for a headerless .csv/.tsv (default: text)")
    parser.add_argument("--text_pair_column", default=None, help="second text of a pair (name or index)")
    parser.add_argument("--label_column", default=None,
                        help="gold labels to score against (name or index); default: a column named label, if any; "
                             "\"\" = no scoring")
    parser.add_argument("--output", default="", help="JSON lines file to write (metrics go to <output without extension>"
                                                     ".metrics.json); default: label<TAB>probability<TAB>text on stdout")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output (and its metrics file) that is not an unchanged earlier "
                             "output of this tool; never INPUT or a file of MODEL")
    parser.add_argument("--skip_bad_rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    parser.add_argument("--max_seq_length", type=int, default=None, help="default: the value used in training")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", type=str.lower, choices=["auto", "gpu", "cpu"], default="auto")
    parser.add_argument("--inference_model", metavar="DIR", default=None,
                        help="instead of MODEL: a directory tools/export_inference.py wrote (Paddle Inference, CPU)")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.inference_model is None):
        parser.error("give MODEL or --inference_model DIR, one of them")
    quiet_libraries()

    try:
        for name in ("max_seq_length", "batch_size"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
        check_output(args.output, TOOL, args.input, args.checkpoint or args.inference_model, args.overwrite)
        rows, label_column = read_inputs(args.input, args.text_column, args.text_pair_column, args.label_column,
                                       args.skip_bad_rows)
        if args.inference_model:
            from paddle_finetune.inference.predictor import load_for_prediction

            model_dir, model, tokenizer, cfg = load_for_prediction(
                args.inference_model, "classification", args.device, defaults=PREDICTION_DEFAULTS)
        else:
            from paddlenlp.transformers import AutoModelForSequenceClassification

            model_dir, model, tokenizer, cfg = load_trained(
                args.checkpoint, AutoModelForSequenceClassification, args.device, defaults=PREDICTION_DEFAULTS)
        label_names = label_names_of(model, model_dir)
        check_pairs(rows, model_dir, cfg)
        if label_column is not None:
            check_gold_labels(rows, label_names, args.input)
        max_seq_length = args.max_seq_length or cfg["max_seq_length"]
        limit = usable_positions(model)
        if limit is not None:
            check_max_lengths({"max_seq_length": max_seq_length}, limit, args.checkpoint or args.inference_model)
        has_labels = label_column is not None
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    features = tokenize_rows(rows, tokenizer, max_seq_length)
    with evaluation_math():  # the math of evaluation in training: the same probabilities, bit for bit
        probs = predict_probabilities(model, features, args.batch_size, tokenizer.pad_token_id)
    predicted = [int(p.argmax()) for p in probs]

    def name(i):
        return label_names[i] if i < len(label_names) else str(i)

    if args.output:
        lines = []
        for row, p, best in zip(rows, probs, predicted):
            record = {"text": row["text"]}
            if "text_pair" in row:
                record["text_pair"] = row["text_pair"]
            if has_labels:
                record["gold_label"] = row["label"]
            record.update(prediction=name(best), probability=round(float(p[best]), 4))
            lines.append(json.dumps(record, ensure_ascii=False) + "\n")
        write_atomic(args.output, "".join(lines), tool=TOOL, input=real(args.input))
        stderr(f"wrote {len(lines)} predictions to {args.output}")
    else:
        for row, p, best in zip(rows, probs, predicted):
            text = row["text"] + (f" ||| {row['text_pair']}" if "text_pair" in row else "")
            print(f"{name(best)}\t{float(p[best]):.4f}\t{text}")
        sys.stdout.flush()
    remove_stale_metrics(args.output, has_labels)
    if has_labels:
        metrics = score(rows, predicted, label_names)
        unscored = metrics["rows"] - metrics["scored_rows"]
        if metrics["scored_rows"]:
            stderr(f"metrics over {metrics['scored_rows']} of {metrics['rows']} rows"
                   + (f" ({unscored} with an empty gold label not scored)" if unscored else "")
                   + f": accuracy={metrics['accuracy']}, macro_f1={metrics['macro_f1']}")
        else:
            stderr("no accuracy: every gold label is empty")
        if args.output:
            path = metrics_path(args.output)
            write_atomic(path, tool=TOOL, text=json.dumps({"model": model_dir, "input": args.input, "label_column": label_column, **metrics},
                                          ensure_ascii=False, indent=2) + "\n")
            stderr(f"wrote metrics to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
