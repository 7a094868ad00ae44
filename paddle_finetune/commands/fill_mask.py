"""Fill in [MASK] tokens with a masked language model.

    python tools/fill_mask.py output/mlm "探险家[MASK][MASK]带领队伍抵达了海边。" --top_k 5
    python tools/fill_mask.py output/mlm/initial_model "探险家[MASK][MASK]带领队伍抵达了海边。"   # before training

MODEL_DIR is a model directory (a checkpoint, output_dir/initial_model, any paddlenlp
masked-LM directory) or an output_dir (its best checkpoint, else its newest).
Prints, for each mask, the top-k tokens with their probabilities.
--inference_model DIR fills masks with a model tools/export_inference.py exported (Paddle Inference, CPU).
"""
import argparse
import sys

from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.models.loading import load_trained
from paddle_finetune.reporting.console import console_on_stderr, quiet_libraries
from paddle_finetune.runtime.environment import record_launch_env
from paddle_finetune.tasks.masked_lm import best_fill, fill_mask


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its data."""
    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", help="model directory or output_dir (or give --inference_model)")
    parser.add_argument("text", help="text with one or more [MASK] (the tokenizer's mask token)")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--device", choices=["auto", "gpu", "cpu"], default="auto")
    parser.add_argument("--inference_model", metavar="DIR", default=None,
                        help="instead of MODEL_DIR: a directory tools/export_inference.py wrote (Paddle Inference, CPU)")
    args = parser.parse_args(argv)
    if (args.model_dir is None) == (args.inference_model is None):
        parser.error("give MODEL_DIR or --inference_model DIR, one of them")
    quiet_libraries()
    try:
        if args.inference_model:
            from paddle_finetune.inference.predictor import load_for_prediction

            _, model, tokenizer, _ = load_for_prediction(args.inference_model, "masked_lm", args.device)
        else:
            from paddlenlp.transformers import AutoModelForMaskedLM

            _, model, tokenizer, _ = load_trained(args.model_dir, AutoModelForMaskedLM, args.device)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        results = fill_mask(model, tokenizer, args.text, args.top_k)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.text} -> {best_fill(results)}")
    for k, candidates in enumerate(results, start=1):
        print(f"mask {k}: " + "  ".join(f"{token} {prob:.4f}" for token, prob in candidates))
    return 0


if __name__ == "__main__":
    sys.exit(main())
