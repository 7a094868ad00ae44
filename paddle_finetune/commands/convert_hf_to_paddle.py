#!/usr/bin/env python
"""Convert a local Hugging Face (PyTorch) checkpoint directory into a PaddleNLP one.

    python tools/convert_hf_to_paddle.py SRC_DIR DST_DIR [--tokenizer DIR] [--verify] [--tolerance 1e-4]

SRC_DIR holds an HF ``config.json``, the weights (``model.safetensors``,
``pytorch_model.bin`` or a sharded ``*.index.json``) and usually the tokenizer
files. A weights-only SRC_DIR converts too (no tokenizer is copied, and the
report says so); ``--tokenizer DIR`` takes the tokenizer from another HF dir.
DST_DIR receives ``model.safetensors``, a PaddleNLP ``config.json``, the
PaddleNLP tokenizer files and ``hf_conversion.json`` (written last: its presence
means the conversion finished). DST_DIR must be new or empty, or an earlier
conversion of the same SRC_DIR (real paths) holding nothing else; never SRC_DIR,
the --tokenizer dir, inside one or holding one (checkpoints.ownership.check_destination).
With --verify and --tokenizer DIR, DIR's tokenizer must also give SRC_DIR's own
tokenizer's ids, when SRC_DIR has one.

This is only the command line: the conversion itself (mapping tables, checks,
verification) is the top-level module ``hf_to_paddle``. Exit code 0 on
success, 1 when the checkpoint cannot be converted or ``--verify`` fails.
"""
import argparse
import logging
import sys
from typing import Optional, Sequence

from paddle_finetune.conversion.architectures import ARCHITECTURES
from paddle_finetune.conversion.to_paddle import convert, no_tokenizer_message
from paddle_finetune.runtime.environment import record_launch_env
from paddle_finetune.errors import ConversionError, VerificationError


def _tokenizer_line(report: dict) -> str:
    if report["tokenizer_class"] is None:
        return "NONE copied: " + no_tokenizer_message(report["source"], report["destination"])
    if report.get("tokenizer_source") not in (None, report["source"]):
        return f"{report['tokenizer_class']} (from {report['tokenizer_source']})"
    return report["tokenizer_class"]


def _print_report(report: dict) -> None:
    print(f"architecture     : {report['architecture']} -> paddlenlp {report['paddle_class']}")
    print(f"weights          : {report['weights_format']} {', '.join(report['weight_files'])}")
    print(f"parameters       : {report['n_params']:,}")
    print(f"tokenizer        : {_tokenizer_line(report)}")
    for key, reason in report["ignored_keys"]:
        print(f"ignored HF key   : {key} ({reason})")
    for old, new in report["renamed_legacy_keys"]:
        print(f"renamed HF key   : {old} -> {new}")
    for name in report["placeholders_zero_filled"]:
        print(f"zero-filled      : {name} (absent in HF, unused by this head's outputs)")
    print(f"convert time     : {report['convert_seconds']:.2f}s"
          + (f" (+ verify {report['verify_seconds']:.2f}s)" if "verify_seconds" in report else ""))
    v = report.get("verify")
    if v:
        print(f"max |HF - Paddle|: {v['max_abs_diff']:.3e} on {v['compared']} (tolerance {v['tolerance']:g})")
        if "greedy_identical" in v:
            shape = f"{len(v['greedy_hf'])} sequences x {len(v['greedy_hf'][0])} tokens"
            print(f"greedy identical : {v['greedy_identical']} ({shape})")
        if "tokenizer_identical" in v:
            print(f"tokenizer ids    : {'identical' if v['tokenizer_identical'] else 'DIFFERENT'}")
        elif "tokenizer_check" in v:
            print(f"tokenizer ids    : {v['tokenizer_check']}")
        if "tokenizer_matches_source" in v:
            print(f"--tokenizer      : {'same ids as' if v['tokenizer_matches_source'] else 'DIFFERENT ids from'} "
                  "SRC_DIR's own tokenizer")
        elif "tokenizer_source_check" in v:
            print(f"--tokenizer      : {v['tokenizer_source_check']}")
        for key in v.get("hf_reload_mismatches", []):
            print(f"note             : transformers' from_pretrained does not reproduce stored {key}; "
                  f"compared against the stored value")
        print(f"verify           : {'PASSED' if v['passed'] else 'FAILED'}")
    print(f"written to       : {report['destination']}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    record_launch_env()  # before paddle and torch load (zlib first on paddle 2.6)
    parser = argparse.ArgumentParser(
        description="Convert a local Hugging Face checkpoint dir (BERT, RoBERTa, BART, GPT-2) to PaddleNLP format.",
        epilog="Supported architectures: " + ", ".join(sorted(ARCHITECTURES)),
    )
    parser.add_argument("src_dir", metavar="SRC_DIR", help="HF dir: config.json, weights, tokenizer files (optional)")
    parser.add_argument("dst_dir", metavar="DST_DIR", help="output dir, loadable with paddlenlp from_pretrained")
    parser.add_argument(
        "--tokenizer",
        metavar="DIR",
        default=None,
        help="HF tokenizer dir (vocab.txt, vocab.json + merges.txt or tokenizer.json) to convert instead of "
        "SRC_DIR's own; for weights-only SRC_DIRs",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run HF (torch) and the converted Paddle model on the same padded inputs; "
        "exit non-zero if outputs differ beyond --tolerance or greedy generations differ",
    )
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    args = parser.parse_args(argv)
    # The report below lists ignored keys etc.; keep the library's INFO lines quiet.
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        report = convert(
            args.src_dir, args.dst_dir, verify=args.verify, tolerance=args.tolerance, tokenizer_dir=args.tokenizer
        )
    except VerificationError as e:
        if e.report:
            _print_report(e.report)
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
