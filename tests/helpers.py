"""Shared by the end-to-end tests: run a real entry point as a user would, read its JSONL logs."""
import json
import os
import subprocess
import sys

from paddle_finetune.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
CSL = os.path.join(ROOT, "..", "shared", "data", "csl")


def run_entry(args, cwd=ROOT, timeout=300):
    """`python <args>` from the repo root, with wandb offline and no credentials, as on a fresh machine."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tiny_bart_arg(d_model=32, dropout=0.1, max_position_embeddings=128):
    """--model_config for a one-layer BART small enough that an end-to-end run takes seconds."""
    config = dict(d_model=d_model, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                  encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                  max_position_embeddings=max_position_embeddings, dropout=dropout)
    return f"--model_config={config!r}"
