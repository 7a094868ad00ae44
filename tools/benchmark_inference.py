"""Prediction rows/s: the dygraph model (what the prediction tools run) against its Paddle Inference export
(tools/export_inference.py, what --inference_model runs), with and without oneDNN, on the same batches, and
whether they predict the same.

    python tools/benchmark_inference.py                          # small and base, classification and summarization
    python tools/benchmark_inference.py --sizes small --rows 32 --repeats 1

Models are built from config with paddlenlp's initialization (no download): "small" is the trainers' default
model_config, "base" BERT-base / BART-base dimensions, over a character vocabulary of the built-in sample data
(datasets/sample_*), whose dev texts are predicted. Summaries are held to exactly --max_target_length tokens
(min length = max length), so the work is equal whatever a random model predicts. Variants run interleaved,
--repeats times; the table gives the median rows/s. Output: a markdown table on stdout.
"""
import argparse
import json
import os
import sys
import tempfile
import time

from paddle_finetune.runtime.environment import record_launch_env

record_launch_env()

import numpy as np  # noqa: E402

from paddle_finetune.paths import PROJECT_ROOT  # noqa: E402

SIZES = {
    "small": {"bert": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256),
              "bart": dict(d_model=128, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                           decoder_attention_heads=4, encoder_ffn_dim=256, decoder_ffn_dim=256)},
    "base": {"bert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
             "bart": dict(d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                          decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072)},
}


def read_texts():
    import csv

    with open(os.path.join(PROJECT_ROOT, "datasets", "sample_summarization", "dev.jsonl"), encoding="utf-8") as f:
        summaries = [json.loads(line) for line in f if line.strip()]
    with open(os.path.join(PROJECT_ROOT, "datasets", "sample_classification", "dev.tsv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [r["content"] for r in summaries], [r["text"] for r in rows]


def build_source(directory, task, size, tokenizer, args):
    """A saved model built from config, as a trainer saves one."""
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration, BertConfig, BertForSequenceClassification

    paddle.seed(0)
    vocab = len(tokenizer.get_vocab())
    if task == "classification":
        model = BertForSequenceClassification(BertConfig(vocab_size=vocab, max_position_embeddings=512, num_labels=4,
                                                         **SIZES[size]["bert"]))
        run = {"max_seq_length": 128, "text_pair_column": None}
    else:
        ids = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.cls_token_id,
                   eos_token_id=tokenizer.sep_token_id, decoder_start_token_id=tokenizer.cls_token_id)
        model = BartForConditionalGeneration(BartConfig(vocab_size=vocab, max_position_embeddings=256, dropout=0.0,
                                                        **ids, **SIZES[size]["bart"]))
        run = {"max_source_length": 192, "max_target_length": args.max_target_length,
               "min_target_length": args.max_target_length, "num_beams": 1}
    model.eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, "train_config.json"), "w", encoding="utf-8") as f:
        json.dump(run, f)
    return run


def predictor_for(task, run, tokenizer, args):
    """(features, predict(model) -> comparable output) for a task, with the prediction tools' own functions."""
    from paddle_finetune.tasks import classification, summarization

    sources, texts = read_texts()
    if task == "classification":
        features = classification.tokenize_rows([{"text": t} for t in texts[: args.rows]], tokenizer, run["max_seq_length"])
        return features, lambda model, beams: classification.predict_probabilities(
            model, features, args.batch_size, tokenizer.pad_token_id, desc="bench").argmax(-1).tolist()
    cfg = {**summarization.PREDICTION_DEFAULTS, **run, "eval_batch_size": args.batch_size}
    features = summarization.tokenize_examples([{"source": s, "target": ""} for s in sources[: args.rows]], tokenizer,
                                               cfg, tokenizer.sep_token_id)

    def predict(model, beams):
        ids = summarization.special_ids(tokenizer, model)
        return [r.tolist() for r in summarization.generate_ids(model, features, dict(cfg, num_beams=beams), ids, desc="bench")]
    return features, predict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="small,base")
    parser.add_argument("--tasks", default="classification,summarization")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--max_target_length", type=int, default=32)
    parser.add_argument("--beams", default="1,4", help="summarization: greedy (1) and beam search widths")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from paddlenlp.transformers import BertTokenizer

    from paddle_finetune.data.text import write_char_vocab
    from paddle_finetune.inference.export import export_inference
    from paddle_finetune.inference.predictor import load_exported
    from paddle_finetune.models.weights import load_model_dir
    from paddle_finetune.reporting.console import quiet_libraries
    from paddle_finetune.runtime.environment import cpu_threads, setup_device

    quiet_libraries()
    setup_device("cpu")
    work = tempfile.mkdtemp(prefix="bench-inference-")
    sources, texts = read_texts()
    tokenizer = BertTokenizer(vocab_file=write_char_vocab(sources + texts, os.path.join(work, "vocab.txt")))
    print(f"paddle {__import__('paddle').__version__}, {cpu_threads()} threads, load {os.getloadavg()[0]:.1f}, "
          f"{args.rows} rows, batch {args.batch_size}", file=sys.stderr)
    print("| size | task | decoding | dygraph rows/s | inference rows/s (oneDNN) | inference rows/s (no oneDNN) | same output |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for size in args.sizes.split(","):
        for task in args.tasks.split(","):
            src, dst = os.path.join(work, f"{size}-{task}"), os.path.join(work, f"{size}-{task}-exported")
            run = build_source(src, task, size, tokenizer, args)
            export_inference(src, dst)
            from paddlenlp.transformers import BartForConditionalGeneration, BertForSequenceClassification

            cls = BertForSequenceClassification if task == "classification" else BartForConditionalGeneration
            variants = {"dygraph": load_model_dir(cls, src).eval(), "onednn": load_exported(dst, onednn=True)[1],
                        "plain": load_exported(dst, onednn=False)[1]}
            features, predict = predictor_for(task, run, tokenizer, args)
            for beams in ([1] if task == "classification" else [int(b) for b in args.beams.split(",")]):
                times, outputs = {k: [] for k in variants}, {}
                for name, model in variants.items():  # warm-up: every batch shape once (oneDNN primitives, allocator)
                    outputs[name] = predict(model, beams)
                for _ in range(args.repeats):
                    for name, model in variants.items():
                        started = time.perf_counter()
                        predict(model, beams)
                        times[name].append(time.perf_counter() - started)
                rate = {k: len(features) / float(np.median(v)) for k, v in times.items()}
                same = all(outputs[k] == outputs["dygraph"] for k in variants)
                decoding = "-" if task == "classification" else ("greedy" if beams == 1 else f"beam {beams}")
                print(f"| {size} | {task} | {decoding} | {rate['dygraph']:.1f} | {rate['onednn']:.1f} "
                      f"({rate['onednn'] / rate['dygraph']:.2f}x) | {rate['plain']:.1f} ({rate['plain'] / rate['dygraph']:.2f}x) "
                      f"| {'yes' if same else 'NO'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
