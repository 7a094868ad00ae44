"""Issue #20: the Python API a notebook calls (each trainer's run(config=None, **overrides)), and a run that owns
its process state and gives all of it back.

- run() twice in one process: two complete runs, each with its own run.log, results and released state;
- run() gives the metrics the command line gives for the same config;
- bad input raises the typed error carrying the message the command line prints;
- a run leaves no handler, hook, lock or open file behind, and works off the main thread;
- a user's own distributed.py / metrics.py first on sys.path breaks no trainer or tool.
"""
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import warnings

import pytest

import train
import train_classification
from helpers import ROOT, read_jsonl, run_entry, tiny_bart_config
from paddle_finetune.errors import ConfigError, DataError
from paddle_finetune.reporting.console import unquiet_libraries
from paddle_finetune.runtime import state

SMALL = dict(model_config=tiny_bart_config(), report_to="none", device="cpu", max_steps=4, save_steps=2, logging_steps=1,
             max_train_samples=32, train_batch_size=8, max_eval_samples=4, eval_batch_size=4, max_source_length=48,
             max_target_length=8)


def run_log_runs(out):
    text = (out / "run.log").read_text(encoding="utf-8")
    return [part for part in text.split("==== ")[1:]]


def test_run_twice_in_one_process_gives_two_complete_runs(tmp_path):
    unquiet_libraries()  # as in a fresh kernel: nothing routed yet
    hook, handlers = sys.excepthook, {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root_handlers, showwarning = list(logging.getLogger().handlers), warnings.showwarning
    first = train.run(output_dir=str(tmp_path / "a"), **SMALL)
    second = train.run(dict(SMALL, output_dir=str(tmp_path / "b"), learning_rate=3e-3))
    for out, results in ((tmp_path / "a", first), (tmp_path / "b", second)):
        assert results == json.loads((out / "all_results.json").read_text()), "run() returns all_results.json's content"
        assert results["global_step"] == 4 and "eval_rougeL" in results and results["final_model"] == str(out)
        assert (out / "model.safetensors").is_file() and [r["step"] for r in read_jsonl(out / "train_log.jsonl")] == [1, 2, 3, 4]
        runs = run_log_runs(out)
        assert len(runs) == 1 and "via run()" in runs[0].splitlines()[0], "each run.log holds its own run only"
        assert not (out / ".lock").exists(), "the claim is released"
    assert first["train_loss"] != second["train_loss"], "the second run used its own learning rate"
    assert not state.current().active and state.current().run_log.file is None and not state.current().claims
    assert sys.excepthook is hook and {s: signal.getsignal(s) for s in handlers} == handlers
    assert logging.getLogger().handlers == root_handlers and warnings.showwarning is showwarning, "library logging given back"


def test_run_gives_the_metrics_the_command_line_gives(tmp_path):
    api = train.run(output_dir=str(tmp_path / "api"), **SMALL)
    argv = [f"--{k}={v!r}" if not isinstance(v, str) else f"--{k}={v}" for k, v in SMALL.items()]
    cli = run_entry(["train.py", f"--output_dir={tmp_path / 'cli'}", *argv], process=True)  # a real process
    assert cli.returncode == 0, cli.stderr[-2000:]
    from_cli = json.loads((tmp_path / "cli" / "all_results.json").read_text())
    timing = ("runtime", "per_second", "final_model")
    assert {k: v for k, v in api.items() if not k.endswith(timing)} == {k: v for k, v in from_cli.items() if not k.endswith(timing)}
    assert [r["loss"] for r in read_jsonl(tmp_path / "api" / "train_log.jsonl")] == \
        [r["loss"] for r in read_jsonl(tmp_path / "cli" / "train_log.jsonl")]


@pytest.mark.parametrize("overrides, error, message", [
    ({"learning_rate": -1.0}, ConfigError, "learning_rate must be > 0, got -1.0"),
    ({"lerning_rate": 1e-3}, ConfigError, "unknown config key 'lerning_rate'"),
    ({"max_steps": "ten"}, ConfigError, "config key 'max_steps' (from run(max_steps=...)) must be int"),
])
def test_bad_input_raises_the_typed_error_with_the_command_lines_message(tmp_path, overrides, error, message):
    out = tmp_path / "out"
    with pytest.raises(error) as raised:
        train.run(output_dir=str(out), **{**SMALL, **overrides})
    assert message in str(raised.value)
    assert not out.exists(), "a refused run leaves nothing"
    assert not state.current().active


def test_a_data_error_from_python_and_from_the_command_line_say_the_same(tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"content": "正文", "title": "标题"}\n{"content": "缺标题"}\n', encoding="utf-8")
    with pytest.raises(DataError) as raised:
        train.run(output_dir=str(tmp_path / "a"), train_file=str(bad), **SMALL)
    cli = run_entry(["train.py", f"--output_dir={tmp_path / 'b'}", f"--train_file={bad}", "--report_to=none", "--device=cpu"])
    assert cli.returncode == 2 and cli.stderr.strip().splitlines()[-1] == f"error: {raised.value}"


def test_a_run_off_the_main_thread_installs_no_signal_handler_and_finishes(tmp_path):
    results, errors = [], []

    def work():
        try:
            results.append(train_classification.run(output_dir=str(tmp_path / "out"), report_to="none", device="cpu",
                                                    max_steps=2, save_steps=2, max_train_samples=16, train_batch_size=8,
                                                    max_eval_samples=8, model_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                                                      "num_attention_heads": 2, "intermediate_size": 64}))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    before = signal.getsignal(signal.SIGINT)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors, errors
    assert results[0]["global_step"] == 2 and signal.getsignal(signal.SIGINT) is before


SHADOWS = {
    "distributed.py": "raise ImportError('this is the user own distributed.py (or Dask), not ours')\n",
    "metrics.py": "raise ImportError('this is the user own metrics.py, not ours')\n",
    "evaluation.py": "raise ImportError('this is the user own evaluation.py, not ours')\n",
    "reporting.py": "raise ImportError('this is the user own reporting.py, not ours')\n",
    "checkpoints.py": "raise ImportError('this is the user own checkpoints.py, not ours')\n",
    "configuration.py": "raise ImportError('this is the user own configuration.py, not ours')\n",
}


def test_a_users_own_modules_first_on_sys_path_break_no_trainer_or_tool(tmp_path):
    """A notebook's directory holding distributed.py (Dask's package name), metrics.py, ...: first on sys.path,
    as a notebook's own directory is. Every trainer's --help and a real run, and a tool, still work."""
    user = tmp_path / "notebook"
    user.mkdir()
    for name, text in SHADOWS.items():
        (user / name).write_text(text)
    out = tmp_path / "out"
    script = f"""
import sys
sys.path.insert(0, {str(user)!r})
import train, train_classification, train_mlm, train_clm
from paddle_finetune.commands import predict_summarization
results = train.run(output_dir={str(out)!r}, report_to="none", device="cpu", max_steps=1, save_steps=1, max_source_length=48,
                    max_train_samples=8, train_batch_size=8, max_eval_samples=2, eval_batch_size=2,
                    model_config={tiny_bart_config()!r})
code = predict_summarization.main([{str(out)!r}, {os.path.join(ROOT, "datasets", "sample_summarization", "dev.jsonl")!r},
                                   "--output", {str(tmp_path / "p.jsonl")!r}])
print("OK", results["global_step"], code)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=str(user), capture_output=True, text=True, timeout=600,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "OK 1 0"
    for name in ("train.py", "train_classification.py", "train_mlm.py", "train_clm.py", "tools/predict_summarization.py"):
        helped = subprocess.run([sys.executable, os.path.join(ROOT, name), "--help"], cwd=str(user), capture_output=True,
                                text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                                    [str(user), os.environ.get("PYTHONPATH", "")])})
        assert helped.returncode == 0 and helped.stdout.strip(), (name, helped.stderr[-2000:])
