"""The configuration rules through the real entry points (python train*.py ...), as a user runs them.

Every refused run exits 2 with one `error:` line naming the key, no traceback, and creates no output_dir.
"""
import json
import os
import re

import pytest

from helpers import ROOT, run_entry

TRAINERS = ("train.py", "train_classification.py", "train_mlm.py", "train_clm.py")
# A top-level CONFIG key with a comment beside it, as written in the trainer (4-space indent).
KEY_WITH_COMMENT = re.compile(r"^    (\w+)=.*?  # (.+)$")


def refused(result, key, out=None):
    """Exit 2, one `error:` line that names `key`, no traceback, and no output_dir."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(errors) == 1 and key in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    if out is not None:
        assert not out.exists(), "the run must fail before any work"
    return errors[0]


def config_block(source):
    lines = source.splitlines()
    start = lines.index("CONFIG = dict(")
    return lines[start:lines.index(")", start)]


@pytest.mark.parametrize("prog", TRAINERS)
def test_help_shows_every_key_with_its_comment_default_and_section(prog):
    import importlib

    config = importlib.import_module(prog[:-3]).CONFIG
    result = run_entry([prog, "--help"])
    assert result.returncode == 0, result.stderr[-2000:]
    flat = " ".join(result.stdout.split())
    for key, value in config.items():
        if isinstance(value, dict):  # shown compactly, over a few lines
            assert f"--{key}={{" in flat and all(f"{k!r}: {v!r}" in flat for k, v in value.items()), key
        else:
            assert f"--{key}={value!r}" in flat, key
    with open(os.path.join(ROOT, prog), encoding="utf-8") as f:
        block = config_block(f.read())
    commented = 0
    for line in block:
        match = KEY_WITH_COMMENT.match(line)
        if match:
            assert " ".join(match.group(2).split()) in flat, (prog, match.group(1))
            commented += 1
    assert commented > 30
    sections = [m.group(1) for m in (re.match(r"^    # --- (.+) ---$", line) for line in block) if m]
    assert sections[:2] == ["run", "model"]
    positions = [result.stdout.splitlines().index(f"{s}:") for s in sections]
    assert positions == sorted(positions)
    assert "--do_train=True" in flat and "False: only evaluate pretrained_model on dev/test" in flat
    assert "'' with no dataset_name: the built-in sample in datasets/" in flat.replace('""', "''")


def test_help_shows_the_comment_lines_above_a_key_and_works_from_another_directory(tmp_path):
    result = run_entry([os.path.join(ROOT, "train_mlm.py"), "--help"], cwd=tmp_path)
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    assert "--line_by_line=True True: one example per line, False: texts concatenated and cut into block_size blocks." in flat
    assert "in blocks it was still at 93 after 600." in flat


def test_do_train_alone_is_true_and_does_not_take_the_next_argument(tmp_path):
    out = tmp_path / "out"
    # the next argument is still parsed as its own key: its range error is the one reported
    error = refused(run_entry(["train_classification.py", "--do_train", "--learning_rate=-1", f"--output_dir={out}"]), "learning_rate", out)
    assert error == "error: learning_rate must be > 0, got -1.0"
    error = refused(run_entry(["train_classification.py", "--do_train", "False", f"--output_dir={out}"]), "--do_train", out)
    assert "--do_train=False" in error


@pytest.mark.parametrize("prog", TRAINERS)
def test_do_eval_is_an_unknown_key_with_the_closest_keys(prog, tmp_path):
    out = tmp_path / "out"
    error = refused(run_entry([prog, "--do_eval", f"--output_dir={out}"]), "unknown config key 'do_eval'", out)
    assert "do_train" in error and "needs a value" not in error


@pytest.mark.parametrize("prog, arg, names", [
    ("train.py", "--model_config={'d_model': 90}", ["'d_model']=90", "'encoder_attention_heads']=4"]),
    ("train.py", "--model_config={'d_modle': 96}", ["'d_modle'", "BartConfig", "d_model"]),
    ("train_classification.py", "--model_config={'hidden_size': 'x'}", ["'hidden_size'", "got str 'x'"]),
    ("train_mlm.py", "--model_config={'num_attention_heads': 3}", ["'hidden_size']=128", "'num_attention_heads']=3"]),
    ("train_clm.py", "--model_config={'hiden_size': 64}", ["'hiden_size'", "GPTConfig", "hidden_size"]),
])
def test_a_partial_model_config_is_checked_against_the_models_config_class(prog, arg, names, tmp_path):
    out = tmp_path / "out"
    error = refused(run_entry([prog, arg, f"--output_dir={out}"]), "model_config", out)
    assert all(name in error for name in names), error


@pytest.mark.parametrize("prog, arg, message", [
    ("train.py", "--learning_rate=1e400", "learning_rate must be finite, got inf"),
    ("train_classification.py", "--num_train_epochs=0", "num_train_epochs must be >= 1 when max_steps <= 0"),
    ("train_mlm.py", "--gradient_accumulation_steps=0", "gradient_accumulation_steps must be >= 1, got 0"),
    ("train_clm.py", "--warmup_proportion=1.5", "warmup_proportion must be <= 1, got 1.5"),
    ("train.py", "--num_beams=0", "num_beams must be >= 1, got 0"),
    ("train.py", "--max_source_length=300", "max_source_length=300 exceeds the model's max_position_embeddings=256"),
    ("train_mlm.py", "--metric_for_best=accuracy", "metric_for_best must be one of 'perplexity', 'loss'"),
    ("train_clm.py", "--report_to=tensorboard", "unknown target 'tensorboard'"),
    ("train.py", "--rouge_style=char", "rouge_style must be one of 'chars', 'words', 'cjk_tokens', got 'char'"),
])
def test_a_range_error_stops_before_any_work(prog, arg, message, tmp_path):
    out = tmp_path / "out"
    error = refused(run_entry([prog, arg, f"--output_dir={out}"]), arg[2:].split("=")[0], out)
    assert message in error


def test_device_is_case_insensitive_through_the_entry_point(tmp_path):
    out = tmp_path / "out"
    error = refused(run_entry(["train_clm.py", "--device=TPU", f"--output_dir={out}"]), "'device'", out)
    assert "'auto', 'gpu' or 'cpu' (any case)" in error
    import paddle

    if paddle.is_compiled_with_cuda():
        pytest.skip("a CUDA build: --device=GPU would train")
    # 'GPU' is read as 'gpu': refused for want of CUDA (not as an unknown device), before any work
    error = refused(run_entry(["train_clm.py", "--device=GPU", f"--output_dir={out}"]), "device='gpu'", out)
    assert "no usable CUDA GPU" in error


def test_from_another_directory_the_sample_is_found_and_a_partial_model_config_merges(tmp_path):
    """`python path/to/train.py` failed: data file not found: datasets/sample_summarization/train.jsonl.
    {'d_model': 32} alone used to replace the whole dict (BartConfig's 12 heads: an assertion)."""
    out = tmp_path / "out"
    result = run_entry([os.path.join(ROOT, "train.py"), "--model_config={'d_model': 32}", "--output_dir=out", "--device=Cpu",
                        "--max_steps=1", "--save_steps=1", "--max_train_samples=8", "--max_eval_samples=2", "--report_to=none"],
                       cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["model_config"]["d_model"] == 32 and saved["model_config"]["encoder_layers"] == 2
    sample = os.path.join(ROOT, "datasets", "sample_summarization", "train.jsonl")
    assert saved["train_file"] == "" and f"data: train 8 rows from {sample} (built-in sample)" in result.stdout
    assert saved["device"] == "cpu" and saved["do_train"] is True
    assert (out / "checkpoint-1" / "CHECKPOINT_COMPLETE").exists()


def test_a_bad_value_in_a_yaml_config_names_its_file_and_line(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("# mine\nlearning_rate: 3e-4\nnum_beams: four\n", encoding="utf-8")
    out = tmp_path / "out"
    error = refused(run_entry(["train.py", f"--config={preset}", f"--output_dir={out}"]), "num_beams", out)
    assert error == f"error: config key 'num_beams' (from {preset}:3) must be int like its default 1, got str 'four'"
