"""Shared by the end-to-end tests: run a real entry point as a user would, read its JSONL logs."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSL = os.path.join(ROOT, "..", "shared", "data", "csl")


def run_entry(args, cwd=ROOT, timeout=300):
    """`python <args>` from the repo root, with wandb offline and no credentials, as on a fresh machine."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
