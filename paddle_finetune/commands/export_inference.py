"""Export a trained model for Paddle Inference: static graphs, run by CPU predictors with Paddle Inference's
optimizations, predicting exactly as the dygraph model does (checked before anything is written). On CPU the
export is faster than dygraph for classification; for generation it is about as fast (BENCHMARKS.md).

    python tools/export_inference.py output/classification deploy/classifier
    python tools/export_inference.py output/summarization deploy/summarizer
    python tools/predict_summarization.py --inference_model deploy/summarizer test.jsonl     # same predictions

SRC: an output_dir (its final model, else its best checkpoint, else its newest), a checkpoint-<step> directory
or any Paddle model directory with a tokenizer. Exportable: BartForConditionalGeneration (summarization),
*ForSequenceClassification, *ForMaskedLM and GPTForCausalLM; anything else is refused by name.

DST (new or empty, outside SRC; written in a hidden directory next to it and renamed into place) receives:
  classification, masked LM   model.json (paddle 3) or model.pdmodel (paddle 2) + model.pdiparams: the logits
  causal LM                   model.*: logits and one generation step with GPT's key/value cache
  summarization               encoder.*, cross_cache.* and decoder_step.*: the encoder, the cross-attention
                              keys/values, and one decoder step with its key/value cache; greedy and beam search
                              run in Python over them (paddlenlp's generate(), the run's settings)
and config.json, generation_config.json, the tokenizer, label_map.json / train_config.json when SRC has them,
and inference_config.json (graphs, inputs, outputs, paddle version, the check's result).

Before DST appears, the exported graphs predict the texts of a sample batch (made from the tokenizer's own
vocabulary) through the prediction code and must agree with the dygraph model: logits within --tolerance,
labels, and generated token ids (greedy, and beam search with the run's beams, at least 2) identical.
Programs saved by paddle 3 (.json) cannot be read by paddle 2; export with the paddle you deploy with.
Exit status: 0, 1 when the check fails, 2 when SRC cannot be exported or DST is refused.
"""
import argparse
import sys

from paddle_finetune.errors import CheckpointError, ConfigError, DataError, VerificationError


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its report."""
    from paddle_finetune.reporting.console import console_on_stderr
    from paddle_finetune.runtime.environment import record_launch_env

    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="export_inference.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC", help="output_dir, checkpoint-<step> directory or Paddle model directory")
    parser.add_argument("dst", metavar="DST", help="new or empty directory for the exported model")
    parser.add_argument("--onednn", choices=["auto", "on", "off"], default="auto",
                        help="whether the predictors run with oneDNN; auto: on for classification and masked-LM logits "
                             "(one graph per batch: measured faster), off for generation (a new shape every step: "
                             "oneDNN re-plans each one, measured slower); see BENCHMARKS.md")
    parser.add_argument("--no_onednn", action="store_true", help="the same as --onednn=off")
    parser.add_argument("--tolerance", type=float, default=1e-4,
                        help="max abs logit difference to the dygraph model (default 1e-4)")
    args = parser.parse_args(argv)
    from paddle_finetune.reporting.console import quiet_libraries

    quiet_libraries()
    from paddle_finetune.inference.export import export_inference

    try:
        onednn = False if args.no_onednn else {"auto": None, "on": True, "off": False}[args.onednn]
        report = export_inference(args.src, args.dst, onednn=onednn, tolerance=args.tolerance)
    except VerificationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, DataError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    v = report["verification"]
    print(f"source      : {report['chosen']}")
    print(f"task        : {report['task']} ({report['paddle_class']}), paddle {report['paddle_version']}")
    for name, graph in report["graphs"].items():
        print(f"graph       : {name}: {graph['program']} + {graph['params']}")
    checked = ", ".join(f"{k} max abs diff {d:.2e}" for k, d in v["max_abs_diff"].items())
    decoded = ", ".join(f"{k} identical" for k in v["decoded"])
    print(f"checked     : {v['rows']} sample rows: " + ", ".join(x for x in (checked, decoded) if x)
          + f" (tolerance {v['tolerance']:g})")
    print(f"written to  : {report['destination']} ({report['export_seconds'] + report['verify_seconds']:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
