"""Summarize texts with a checkpoint trained by train.py.

    python tools/predict_summarization.py output/summarization texts.txt
    python tools/predict_summarization.py output/summarization/checkpoint-300 data.jsonl --text_column=content --output=out.jsonl

CHECKPOINT is a checkpoint directory, or an output_dir (its best checkpoint, else its newest).
INPUT is a .txt file (one text per line) or a JSON/JSONL/TSV/CSV file (with --text_column).
Writes JSON lines {"source", "prediction"} to --output, or prints them.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import train as summarization  # noqa: E402
import train_utils as tu  # noqa: E402
from configuration import ConfigError  # noqa: E402
from data_utils import DataError, read_examples  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("input")
    parser.add_argument("--text_column", default="0", help="column name or 0-based index (default: 0; .txt ignores it)")
    parser.add_argument("--output", default="", help="JSONL file to write; default prints to stdout")
    parser.add_argument("--num_beams", type=int, default=None, help="default: the value used in training")
    parser.add_argument("--max_target_length", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", choices=["auto", "gpu", "cpu"], default="auto")
    args = parser.parse_args(argv)

    from paddlenlp.transformers import BartForConditionalGeneration

    try:
        column = args.text_column if not args.input.endswith(".txt") else 0
        examples = read_examples(args.input, {"source": column}, log=lambda m: print(m, file=sys.stderr))
        _, model, tokenizer, cfg = tu.load_trained(
            args.checkpoint, BartForConditionalGeneration, args.device, defaults=summarization.CONFIG)
    except (ConfigError, DataError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    cfg.update(eval_batch_size=args.batch_size)
    if args.num_beams is not None:
        cfg["num_beams"] = args.num_beams
    if args.max_target_length is not None:
        cfg["max_target_length"] = args.max_target_length
    ids = summarization.special_ids(tokenizer, model)
    for ex in examples:
        ex["target"] = ""
    features = summarization.tokenize_examples(examples, tokenizer, cfg, ids["eos"])
    predictions = summarization.generate(model, tokenizer, features, cfg, ids, desc="summarize")
    lines = [json.dumps({"source": ex["source"], "prediction": p}, ensure_ascii=False) for ex, p in zip(examples, predictions)]
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print(f"wrote {len(lines)} predictions to {args.output}", file=sys.stderr)
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
