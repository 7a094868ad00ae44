"""Classify texts with a checkpoint trained by train_classification.py.

    python tools/predict_classification.py output/classification texts.txt
    python tools/predict_classification.py output/classification/checkpoint-120 "上海足球联赛迎来新变化"
    python tools/predict_classification.py CKPT data.tsv --text_column=1 --text_pair_column=2 --output=preds.jsonl

CHECKPOINT is a checkpoint directory, or an output_dir (its best checkpoint, else its newest).
INPUT is a .txt file (one text per line; a TAB separates a text pair), a JSON/JSONL/TSV/CSV
file (with --text_column / --text_pair_column), or else the text itself.
Prints `label<TAB>probability<TAB>text` per input, or writes JSON lines to --output.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train_classification as clf  # noqa: E402
import train_utils as tu  # noqa: E402
from configuration import ConfigError  # noqa: E402
from checkpoints import unwrap_model
from data_utils import DataError, read_examples  # noqa: E402


def read_inputs(path_or_text, text_column, text_pair_column):
    """Rows {"text"[, "text_pair"]} from a file, or one row from literal text."""
    if not os.path.isfile(path_or_text):
        if os.path.splitext(path_or_text)[1].lower() in (".txt", ".json", ".jsonl", ".tsv", ".csv"):
            raise DataError(f"input file not found: {path_or_text}")
        return [{"text": path_or_text}]
    if path_or_text.endswith(".txt"):
        rows = read_examples(path_or_text, {"text": 0}, log=lambda m: print(m, file=sys.stderr))
        return [dict(zip(("text", "text_pair"), r["text"].split("\t", 1))) for r in rows]
    columns = {"text": text_column}
    if text_pair_column is not None:
        columns["text_pair"] = text_pair_column
    return read_examples(path_or_text, columns, log=lambda m: print(m, file=sys.stderr))


def load_label_names(checkpoint, model):
    """label_map.json written with the checkpoint; the model config's id2label as a fallback."""
    path = os.path.join(checkpoint, clf.LABEL_MAP_FILE)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            id2label = json.load(f)["id2label"]
    else:
        id2label = getattr(unwrap_model(model).config, "id2label", None) or {}
    return [id2label.get(str(i), id2label.get(i, str(i))) for i in range(len(id2label))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("input")
    parser.add_argument("--text_column", default="text", help="column name or 0-based index (default: text)")
    parser.add_argument("--text_pair_column", default=None, help="second text of a pair (name or index)")
    parser.add_argument("--output", default="", help="JSONL file to write; default prints to stdout")
    parser.add_argument("--max_seq_length", type=int, default=None, help="default: the value used in training")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--device", choices=["auto", "gpu", "cpu"], default="auto")
    args = parser.parse_args(argv)

    from paddlenlp.transformers import AutoModelForSequenceClassification

    try:
        rows = read_inputs(args.input, args.text_column, args.text_pair_column)
        checkpoint, model, tokenizer, cfg = tu.load_trained(
            args.checkpoint, AutoModelForSequenceClassification, args.device, defaults=clf.CONFIG)
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    label_names = load_label_names(checkpoint, model)
    features = clf.tokenize_rows(rows, tokenizer, args.max_seq_length or cfg["max_seq_length"])
    probs = clf.predict_probabilities(model, features, args.batch_size, tokenizer.pad_token_id)
    results = []
    for row, p in zip(rows, probs):
        best = int(p.argmax())
        results.append({**row, "label": label_names[best] if best < len(label_names) else str(best), "probability": round(float(p[best]), 4)})
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
        print(f"wrote {len(results)} predictions to {args.output}", file=sys.stderr)
    else:
        for r in results:
            text = r["text"] + (f" ||| {r['text_pair']}" if "text_pair" in r else "")
            print(f"{r['label']}\t{r['probability']:.4f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
