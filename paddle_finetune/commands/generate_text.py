"""Continue a prompt with a causal language model trained by train_clm.py (or any paddlenlp causal LM).

    python tools/generate_text.py output/clm "探险家" --strategy greedy
    python tools/generate_text.py output/clm/checkpoint-180 "北京" --strategy top_k --top_k 5 --seed 1
    python tools/generate_text.py output/clm "北京" --strategy top_p --top_p 0.9 --num_return 3

MODEL_DIR is a model directory (e.g. a checkpoint) or an output_dir (its best checkpoint, else its newest).
--inference_model DIR generates with a model tools/export_inference.py exported (Paddle Inference, CPU).
"""
import argparse
import sys

from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.models.loading import load_trained
from paddle_finetune.reporting.console import console_on_stderr, quiet_libraries
from paddle_finetune.runtime.environment import record_launch_env
from paddle_finetune.tasks.causal_lm import STRATEGIES, generate_text

DEFAULT_MAX_NEW_TOKENS = 50  # also what tools/export_hf.py writes into a GPT-2's generation_config.json


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its data."""
    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", help="model directory or output_dir (or give --inference_model)")
    parser.add_argument("prompt")
    parser.add_argument("--strategy", choices=STRATEGIES, default="greedy")
    parser.add_argument("--max_new_tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--top_k", type=int, default=5, help="for --strategy top_k")
    parser.add_argument("--top_p", type=float, default=0.9, help="for --strategy top_p")
    parser.add_argument("--temperature", type=float, default=1.0, help="for the sampling strategies")
    parser.add_argument("--num_return", type=int, default=1, help="samples to draw (greedy always gives one)")
    parser.add_argument("--seed", type=int, default=None, help="makes sampling reproducible")
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

            _, model, tokenizer, _ = load_for_prediction(args.inference_model, "causal_lm", args.device)
        else:
            from paddlenlp.transformers import AutoModelForCausalLM

            _, model, tokenizer, _ = load_trained(args.model_dir, AutoModelForCausalLM, args.device)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for k in range(1 if args.strategy == "greedy" else args.num_return):
        seed = None if args.seed is None else args.seed + k
        text = generate_text(model, tokenizer, args.prompt, args.strategy, args.max_new_tokens,
                                 args.top_k, args.top_p, args.temperature, seed)
        print(args.prompt + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
