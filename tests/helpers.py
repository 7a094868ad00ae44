"""Shared by the end-to-end tests: run a real entry point as a user would, read its JSONL logs.

snapshot(root) is a directory's exact content, to show a refused command touched nothing.

run_entry(["train.py", "--key=value", ...]) runs a trainer's or a tool's real command line. By default it runs in
this process: the same cli()/main() a console script calls, with stdout and stderr captured, the working
directory and wandb's environment as on a fresh machine, and the exit status read from SystemExit (or 1 with the
traceback on stderr, as Python would print it). That skips a paddle import per call. process=True starts a real
`python` instead, for what only a process shows: signals, kill -9, import-time behaviour, locks between processes,
the launcher.
"""
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
import traceback

from paddle_finetune.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
CSL = os.path.join(ROOT, "..", "shared", "data", "csl")

# script as typed -> (module, function taking argv)
ENTRIES = {
    "train.py": ("train", "cli"),
    "train_classification.py": ("train_classification", "cli"),
    "train_mlm.py": ("train_mlm", "cli"),
    "train_clm.py": ("train_clm", "cli"),
    "tools/predict_summarization.py": ("paddle_finetune.commands.predict_summarization", "main"),
    "tools/predict_classification.py": ("paddle_finetune.commands.predict_classification", "main"),
    "tools/fill_mask.py": ("paddle_finetune.commands.fill_mask", "main"),
    "tools/generate_text.py": ("paddle_finetune.commands.generate_text", "main"),
    "tools/convert_hf_to_paddle.py": ("paddle_finetune.commands.convert_hf_to_paddle", "main"),
}

FRESH_MACHINE_ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}


class Completed(subprocess.CompletedProcess):
    """What run_entry returns either way: args, returncode, stdout, stderr."""


def run_entry(args, cwd=ROOT, timeout=300, process=False, env=None):
    """`python <args>` from the repo root (or cwd), with wandb offline and no credentials, as on a fresh machine."""
    environment = {**os.environ, **FRESH_MACHINE_ENV, **(env or {})}
    environment.pop("WANDB_API_KEY", None)
    if process or args[0] not in ENTRIES:
        return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=environment)
    return run_in_this_process(args, cwd, environment)


@contextlib.contextmanager
def _environment(values, cwd):
    saved, old_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(values)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(saved)


def run_in_this_process(args, cwd=ROOT, environment=None):
    module_name, function = ENTRIES[args[0]]
    entry = getattr(importlib.import_module(module_name), function)
    out, err = io.StringIO(), io.StringIO()
    with _environment(environment or dict(os.environ), cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = entry(list(args[1:]))
        except SystemExit as e:
            code = e.code
        except Exception:  # noqa: BLE001 - what an uncaught exception does to a process: rc 1, traceback on stderr
            traceback.print_exc(file=sys.stderr)
            code = 1
    if code is None:
        code = 0
    elif not isinstance(code, int):
        err.write(f"{code}\n")
        code = 1
    return Completed(list(args), code, out.getvalue(), err.getvalue())


def snapshot(root):
    """{relative path: bytes, "<dir>/" for folders, "-> target" for symlinks, "special" for FIFOs and devices} of
    everything under root, never following a symlink: equal before and after means nothing was touched."""
    found = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                found[rel] = "-> " + os.readlink(path)
            elif os.path.isdir(path):
                found[rel + "/"] = None
            elif not os.path.isfile(path):
                found[rel] = "special"
            else:
                with open(path, "rb") as f:
                    found[rel] = f.read()
    return found


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def tiny_bart_arg(d_model=32, dropout=0.1, max_position_embeddings=128):
    """--model_config for a one-layer BART small enough that an end-to-end run takes seconds."""
    return f"--model_config={tiny_bart_config(d_model, dropout, max_position_embeddings)!r}"


def tiny_bart_config(d_model=32, dropout=0.1, max_position_embeddings=128):
    """The model_config dict of tiny_bart_arg, for the Python API (train.run(model_config=...))."""
    return dict(d_model=d_model, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                max_position_embeddings=max_position_embeddings, dropout=dropout)
