"""Summarize texts with a model trained by train.py, and score the summaries when the input has references.

    python tools/predict_summarization.py output/summarization texts.txt
    python tools/predict_summarization.py output/summarization test.jsonl --output=preds.jsonl    # columns detected; ROUGE when it has summaries
    python tools/predict_summarization.py output/summarization/checkpoint-300 data.tsv --text_column=1 --reference_column=2

MODEL: an output_dir (its final model at the root, else its best checkpoint, else its newest), a
checkpoint-<step> directory or a model directory; which one is used is printed on stderr. Weights are
read without unpickling. --inference_model DIR predicts with a model tools/export_inference.py exported
instead (Paddle Inference on the CPU; the same predictions, row for row).

INPUT is read with the rules train.py reads its data with; a bad row (malformed, missing column, empty
text, null/NaN, not UTF-8, a wrong number of fields) stops with file:line, or is skipped and counted with
--skip_bad_rows:
  .txt             one text a line; no columns, so no references
  .json / .jsonl   rows are objects: columns by name
  .csv / .tsv      with a header row: columns by name. Without one: columns by 0-based index only, so give
                   --text_column (and --reference_column) as numbers; a name means the first line is the header.
Columns: with no --text_column, the text and reference columns are detected among the pairs train.py knows,
    KNOWN_PAIRS
a file with only a known text column is summarized without references. With --text_column given by name,
its pair's summary column is the reference when the file has it. --reference_column="" turns scoring off.
The columns used are printed on stderr.

Outputs:
  predictions  JSON lines {"source", "prediction"} (plus "reference" with references), in input order:
               to --output (written whole, through a temporary file) or, without --output, to stdout.
  metrics      with references: rouge1, rouge2, rougeL (0-100) in --rouge_style, named as rouge_style (the
               model's training style by default, else "chars"), gen_len (tokens), gen_chars and row counts,
               over the rows with a non-empty reference. Printed on stderr, and
               with --output also saved next to it as <output without its extension>.metrics.json
               (--output=preds.jsonl -> preds.metrics.json); without references an earlier file of that name
               is removed, so it is never read as these predictions' metrics.
--output never writes over an input (INPUT, a file of MODEL, anything inside a checkpoint; real paths compared).
An existing --output or metrics file is replaced only when this tool wrote it and it is unchanged since (recorded
in .paddle_finetune_owned.json beside it), or with --overwrite.
Exit status: 0, or 2 with one `error: ...` line on stderr (nothing is written then).
"""
import argparse
import json
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
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.evaluation.rouge import ROUGE_STYLES
from paddle_finetune.models.loading import load_trained, usable_positions
from paddle_finetune.reporting.console import console_on_stderr, quiet_libraries
from paddle_finetune.runtime.environment import evaluation_math, record_launch_env
from paddle_finetune.tasks.summarization import (
    KNOWN_COLUMN_PAIRS,
    PREDICTION_DEFAULTS,
    decode_ids,
    generate_ids,
    generated_length,
    rouge_metrics,
    special_ids,
    tokenize_examples,
)


TOOL = "predict_summarization"  # whose outputs --output may replace (checkpoints.ownership)

def resolve_columns(path, text_column, reference_column):
    """({role: column}, how they were chosen): "source" and, with references, "reference"."""
    text = normalize_column(text_column) if text_column is not None else None
    reference = normalize_column(reference_column) if reference_column not in (None, "") else reference_column
    if path.lower().endswith(".txt"):
        if text not in (None, 0) or reference not in (None, ""):
            raise ConfigError(f"{path}: a .txt file is one text a line, without columns or references; "
                              "drop --text_column/--reference_column, or use a .jsonl/.csv/.tsv file")
        return {"source": 0}, "one text a line"
    how = "given"
    if text is None:
        if isinstance(reference, int):
            raise ConfigError("--reference_column is a 0-based index (a file without a header): give --text_column by index too")
        names = column_names(path)
        pair = next(((t, s) for t, s in KNOWN_COLUMN_PAIRS if t in names and s in names), None)
        if pair:
            text = pair[0]
            if reference is None:
                reference = pair[1]
        else:
            text = next((t for t, _ in KNOWN_COLUMN_PAIRS if t in names), None)
            if text is None:
                raise DataError(f"{path}: cannot tell the text column among {names}; set --text_column "
                                "(a name, or a 0-based index for a file without a header)")
        how = "detected"
    elif reference is None and isinstance(text, str):
        names = column_names(path)
        reference = next((s for t, s in KNOWN_COLUMN_PAIRS if t == text and s in names), None)
    columns = {"source": text}
    if reference not in (None, ""):
        columns["reference"] = reference
    ref = f", reference {reference!r}" if "reference" in columns else ", no reference column (no ROUGE)"
    return columns, f"text {text!r}{ref} ({how})"


def read_inputs(path, text_column, reference_column, skip_bad_rows=False):
    columns, described = resolve_columns(path, text_column, reference_column)
    examples = read_examples(path, columns, skip_bad_rows=skip_bad_rows, allow_empty=("reference",), log=stderr)
    stderr(f"input: {len(examples)} rows from {path}; columns: {described}")
    return examples, columns


def score(examples, predictions, gen_tokens, rouge_style):
    """ROUGE (in rouge_style, named) over the rows with a non-empty reference, gen_len/gen_chars over all rows, and
    the counts."""
    import numpy as np

    scored = [i for i, ex in enumerate(examples) if ex["reference"]]
    metrics = {"rows": len(examples), "scored_rows": len(scored)}
    if scored:
        metrics.update(rouge_metrics([predictions[i] for i in scored], [examples[i]["reference"] for i in scored],
                                     rouge_style))
    metrics["gen_len"] = float(np.mean(gen_tokens)) if gen_tokens else 0.0
    metrics["gen_chars"] = float(np.mean([len(p) for p in predictions])) if predictions else 0.0
    return metrics


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its data."""
    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    pairs = ", ".join(f"{t}/{s}" for t, s in KNOWN_COLUMN_PAIRS)
    parser = argparse.ArgumentParser(prog="predict_summarization.py", description=__doc__.replace("KNOWN_PAIRS", pairs),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="MODEL", nargs="?",
                        help="output_dir, checkpoint-<step> directory or model directory (or give --inference_model)")
    parser.add_argument("input", metavar="INPUT", help=".txt, .json, .jsonl, .csv or .tsv file")
    parser.add_argument("--text_column", default=None,
                        help="name, or 0-based index for a headerless .csv/.tsv; default: detected (see above)")
    parser.add_argument("--reference_column", default=None,
                        help="reference summaries to score against (name or index); default: the detected pair's "
                             "summary column; \"\" = no scoring")
    parser.add_argument("--output", default="", help="JSON lines file to write (metrics go to <output without extension>"
                                                     ".metrics.json); default: predictions on stdout")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --output (and its metrics file) that is not an unchanged earlier "
                             "output of this tool; never INPUT or a file of MODEL")
    parser.add_argument("--skip_bad_rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    parser.add_argument("--num_beams", type=int, default=None, help="default: the value used in training")
    parser.add_argument("--max_target_length", type=int, default=None, help="tokens generated; default: training's")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", type=str.lower, choices=["auto", "gpu", "cpu"], default="auto")
    parser.add_argument("--rouge_style", choices=list(ROUGE_STYLES), default=None,
                        help="ROUGE convention (see train.py --help): \"chars\" (PaddleNLP/CPT, the published LCSTS "
                             "numbers), \"words\" (jieba words, LLaMA-Factory) or \"cjk_tokens\"; default: the one "
                             "the model was trained with, else \"chars\"")
    parser.add_argument("--inference_model", metavar="DIR", default=None,
                        help="instead of MODEL: a directory tools/export_inference.py wrote (Paddle Inference, CPU)")
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.inference_model is None):
        parser.error("give MODEL or --inference_model DIR, one of them")
    quiet_libraries()

    try:
        for name in ("num_beams", "max_target_length", "batch_size"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(args, name)}")
        check_output(args.output, TOOL, args.input, args.checkpoint or args.inference_model, args.overwrite)
        examples, columns = read_inputs(args.input, args.text_column, args.reference_column, args.skip_bad_rows)
        if args.inference_model:
            from paddle_finetune.inference.predictor import load_for_prediction

            model_dir, model, tokenizer, cfg = load_for_prediction(
                args.inference_model, "summarization", args.device, defaults=PREDICTION_DEFAULTS)
        else:
            from paddlenlp.transformers import BartForConditionalGeneration

            model_dir, model, tokenizer, cfg = load_trained(
                args.checkpoint, BartForConditionalGeneration, args.device, defaults=PREDICTION_DEFAULTS)
        cfg.update(eval_batch_size=args.batch_size)
        if args.num_beams is not None:
            cfg["num_beams"] = args.num_beams
        if args.max_target_length is not None:
            cfg["max_target_length"] = args.max_target_length
        if args.rouge_style is not None:
            cfg["rouge_style"] = args.rouge_style
        elif cfg.get("rouge_style") not in ROUGE_STYLES:  # a train_config.json from elsewhere, with another value
            raise ConfigError(f"{model_dir}: train_config.json has rouge_style {cfg.get('rouge_style')!r}; "
                              f"pass --rouge_style ({', '.join(ROUGE_STYLES)})")
        limit = usable_positions(model)
        if limit is not None:
            check_max_lengths({"max_target_length": cfg["max_target_length"]}, limit, args.checkpoint or args.inference_model)
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ids = special_ids(tokenizer, model)
    has_references = "reference" in columns
    features = tokenize_examples([{"source": ex["source"], "target": ""} for ex in examples],
                                               tokenizer, cfg, ids["eos"])
    with evaluation_math():  # the math of evaluation in training: the same tokens, bit for bit
        rows = generate_ids(model, features, cfg, ids, desc="summarize")
    predictions = [decode_ids(tokenizer, row, ids["eos"], ids["pad"]) for row in rows]
    records = []
    for ex, p in zip(examples, predictions):
        record = {"source": ex["source"], "prediction": p}
        if has_references:
            record["reference"] = ex["reference"]
        records.append(json.dumps(record, ensure_ascii=False))
    if args.output:
        write_atomic(args.output, "".join(line + "\n" for line in records), tool=TOOL, input=real(args.input))
        stderr(f"wrote {len(records)} predictions to {args.output}")
    else:
        sys.stdout.write("".join(line + "\n" for line in records))
        sys.stdout.flush()
    remove_stale_metrics(args.output, has_references)
    if has_references:
        metrics = score(examples, predictions, [generated_length(r, ids["eos"], ids["pad"]) for r in rows], cfg["rouge_style"])
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        unscored = metrics["rows"] - metrics["scored_rows"]
        if not metrics["scored_rows"]:
            stderr(f"no ROUGE: every reference (column {columns['reference']!r}) is empty")
        stderr(f"metrics over {metrics['scored_rows']} of {metrics['rows']} rows (reference column {columns['reference']!r}"
               + (f"; {unscored} with an empty reference not scored" if unscored else "") + "): "
               + ", ".join(f"{k}={v}" for k, v in shown.items() if k not in ("rows", "scored_rows", "rouge_style"))
               + (f" (rouge_style {metrics['rouge_style']})" if "rouge_style" in metrics else ""))
        if args.output:
            path = metrics_path(args.output)
            write_atomic(path, tool=TOOL, text=json.dumps({"model": model_dir, "input": args.input, "text_column": columns["source"],
                                           "reference_column": columns["reference"], **metrics},
                                          ensure_ascii=False, indent=2) + "\n")
            stderr(f"wrote metrics to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
