"""Export a Paddle model to Hugging Face format: a directory transformers loads with from_pretrained(DST).

    python tools/export_hf.py output/classification hf-classifier --verify
    python tools/export_hf.py output/summarization/checkpoint-300 hf-bart --verify --tolerance 1e-5

SRC: an output_dir (its final model, else its best checkpoint, else its newest), a checkpoint-<step> directory
or any Paddle model directory (config.json + model.safetensors; an old model_state.pdparams is read without
unpickling). Exportable: BartForConditionalGeneration and BartModel, BertForSequenceClassification,
BertForMaskedLM and BertModel, the same three RoBERTa classes, and GPTForCausalLM (as GPT2LMHeadModel); anything
else is refused by name.

DST receives config.json (the HF model_type; id2label from label_map.json for a classifier), model.safetensors,
generation_config.json for BART and GPT-2 (the run's generation settings: train_config.json's max_target_length,
min_target_length and num_beams, as tools/predict_summarization.py uses them; tools/generate_text.py's defaults
for GPT-2), the tokenizer as HF files (vocab.txt or vocab.json + merges.txt, tokenizer_config.json) and
paddle_export.json (what was exported from where). DST must be new or empty, and outside SRC: it is written in a
hidden directory next to it and renamed into place, so a refused or failed export leaves nothing.

--verify loads DST with transformers and fails (writing nothing) unless it loads every tensor, the logits agree
within --tolerance, greedy decoding is identical token for token (BART, GPT-2: step by step and through each
library's generate() with the exported settings) and both tokenizers give the same ids on sample texts.
Exit status: 0, 1 when the model cannot be exported or --verify fails, 2 for a bad destination.
"""
import argparse
import json
import os
import sys

from paddle_finetune.errors import ConfigError, ConversionError, VerificationError


def run_generation_settings(model_dir, arch, model, tokenizer):
    """The paddlenlp generate() settings prediction uses for this model: summarization's from train_config.json
    (over its defaults), GPT-2's from tools/generate_text.py's defaults; None for the other architectures."""
    if arch == "BartForConditionalGeneration":
        from paddle_finetune.tasks.summarization import PREDICTION_DEFAULTS, generation_settings, special_ids

        cfg = dict(PREDICTION_DEFAULTS)
        path = os.path.join(model_dir, "train_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                cfg.update(json.load(f))
        return generation_settings(cfg, special_ids(tokenizer, model))
    if arch == "GPT2LMHeadModel" and tokenizer is not None:
        from paddle_finetune.commands.generate_text import DEFAULT_MAX_NEW_TOKENS
        from paddle_finetune.tasks.causal_lm import end_of_text_id

        eot = end_of_text_id(tokenizer)
        return dict(decode_strategy="greedy_search", max_new_tokens=DEFAULT_MAX_NEW_TOKENS, eos_token_id=eot,
                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eot)
    return None


def print_report(report, written=True):
    print(f"source           : {report['chosen']}")
    print(f"architecture     : paddlenlp {report['paddle_class']} -> HF {report['architecture']} "
          f"(model_type {report['model_type']})")
    print(f"parameters       : {report['n_params']:,}")
    print(f"tokenizer        : {report['tokenizer_class'] or 'NONE: the source has no tokenizer files'}")
    if report.get("id2label"):
        print(f"labels           : {', '.join(report['id2label'].values())}")
    if report.get("generation_config"):
        print(f"generation       : {json.dumps(report['generation_config'], sort_keys=True)}")
    for name in report["dropped"]:
        print(f"not exported     : {name} (HF's {report['architecture']} has no such tensor; unused by its outputs)")
    v = report.get("verify")
    if v:
        for problem in v["hf_loading_problems"]:
            print(f"HF loading       : {problem}")
        print(f"max |HF - Paddle|: {v['max_abs_diff']:.3e} on {v['compared']} (tolerance {v['tolerance']:g})")
        if "greedy_identical" in v:
            print(f"greedy identical : {v['greedy_identical']} (step by step), "
                  f"{v.get('generate_identical', 'not run')} (generate() with the exported settings)")
        if "tokenizer_identical" in v:
            print(f"tokenizer ids    : {'identical' if v['tokenizer_identical'] else 'DIFFERENT'} "
                  f"({v['hf_tokenizer_class']}, {len(v['tokenizer_texts'])} texts)")
        else:
            print(f"tokenizer ids    : {v['tokenizer_check']}")
        print(f"verify           : {'PASSED' if v['passed'] else 'FAILED'}")
    print(f"{'written to' if written else 'NOT written'}       : {report['destination']}")


def main(argv=None):
    """The command line; returns its exit status. Log lines go to stderr while it runs: stdout is its report."""
    from paddle_finetune.reporting.console import console_on_stderr
    from paddle_finetune.runtime.environment import record_launch_env

    record_launch_env()  # before paddle loads (zlib first on paddle 2.6)
    with console_on_stderr():
        return _main(argv)


def _main(argv=None):
    parser = argparse.ArgumentParser(prog="export_hf.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", metavar="SRC", help="output_dir, checkpoint-<step> directory or Paddle model directory")
    parser.add_argument("dst", metavar="DST", help="new or empty directory for the Hugging Face files")
    parser.add_argument("--verify", action="store_true",
                        help="run transformers and Paddle on the same inputs; write nothing unless they agree")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs logit difference (default 1e-4)")
    args = parser.parse_args(argv)
    from paddle_finetune.reporting.console import quiet_libraries

    quiet_libraries()
    from paddle_finetune.conversion.to_hf import export_failure_message, export_hf

    try:
        from paddle_finetune.checkpoints.export_dir import check_export_dir

        check_export_dir(args.dst, args.src, tool="export_hf")  # before loading anything
        report = export_hf(args.src, args.dst, generation=run_generation_settings, verify=args.verify,
                           tolerance=args.tolerance)
    except VerificationError as e:
        if e.report:
            print_report(e.report, written=False)
        print(f"error: {export_failure_message(e.report['verify'], args.tolerance) if e.report else e}",
              file=sys.stderr)
        return 1
    except ConversionError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
