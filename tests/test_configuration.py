"""configuration.py: --key=value overrides checked against the defaults, --config files, --help."""
import json
import os
import subprocess
import sys

import pytest

import configuration

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {"seed": 42, "learning_rate": 1e-3, "use_amp": False, "output_dir": "out", "model_config": {"d": 1},
            "text_column": None, "warmup_steps": 0, "warmup_proportion": 0.1}


def test_overrides_are_python_literals_checked_against_defaults():
    cfg = configuration.parse_config(DEFAULTS, ["--seed=7", "--learning_rate=3e-4", "--use_amp=False", "--output_dir=/tmp/x",
                                     "--model_config={'d': 2}", "--text_column=1"])
    assert cfg["seed"] == 7 and cfg["learning_rate"] == 3e-4 and cfg["output_dir"] == "/tmp/x"
    assert cfg["use_amp"] is False  # the tutorial's type=bool bug made "False" truthy
    assert cfg["model_config"] == {"d": 2} and cfg["text_column"] == 1
    assert DEFAULTS["seed"] == 42, "defaults must not be mutated"


def test_int_is_accepted_for_a_float_key_and_space_separated_values():
    cfg = configuration.parse_config(DEFAULTS, ["--learning_rate", "1", "--use_amp=true"])
    assert cfg["learning_rate"] == 1.0 and isinstance(cfg["learning_rate"], float)
    assert cfg["use_amp"] is True


def test_unknown_key_names_closest_valid_keys():
    with pytest.raises(configuration.ConfigError, match=r"unknown config key 'lerning_rate'.*closest valid keys: learning_rate"):
        configuration.parse_config(DEFAULTS, ["--lerning_rate=1e-4"])


@pytest.mark.parametrize("arg, message", [
    ("--seed=1.5", r"'seed'.*must be int.*got float 1.5"),
    ("--use_amp=1", r"'use_amp'.*must be True or False"),
    ("--learning_rate=fast", r"'learning_rate'.*must be float.*got str 'fast'"),
])
def test_wrong_type_names_the_key(arg, message):
    with pytest.raises(configuration.ConfigError, match=message):
        configuration.parse_config(DEFAULTS, [arg])


def test_config_files_py_and_json_and_command_line_wins(tmp_path):
    py = tmp_path / "preset.py"
    py.write_text("seed = 3\nlearning_rate = 5e-5\n")
    js = tmp_path / "preset.json"
    js.write_text(json.dumps({"seed": 4, "_comment": "ignored"}))
    assert configuration.parse_config(DEFAULTS, ["--config", str(py)])["learning_rate"] == 5e-5
    assert configuration.parse_config(DEFAULTS, ["--seed=9", f"--config={py}"])["seed"] == 9
    assert configuration.parse_config(DEFAULTS, [f"--config={js}"])["seed"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"sed": 1}')
    with pytest.raises(configuration.ConfigError, match=r"unknown config key 'sed'.*bad.json.*closest valid keys: seed"):
        configuration.parse_config(DEFAULTS, [f"--config={bad}"])


def test_every_preset_in_configs_parses_against_train_config():
    import train

    for name in ("lcsts_new.py", "csl_title.py", "custom_json.json"):
        cfg = configuration.parse_config(train.CONFIG, [f"--config={name}"])
        assert cfg["output_dir"] != train.CONFIG["output_dir"], name


def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_help_lists_every_key_with_default():
    import train

    result = run_train("--help")
    assert result.returncode == 0
    for key, value in train.CONFIG.items():
        assert f"--{key}" in result.stdout and repr(value) in result.stdout, key


def test_cli_bad_key_exits_nonzero_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = run_train("--learning_rte=1e-3", f"--output_dir={out}")
    assert result.returncode == 2
    assert "unknown config key 'learning_rte'" in result.stderr and "learning_rate" in result.stderr
    assert not out.exists()
    result = run_train("--max_steps=ten", f"--output_dir={out}")
    assert result.returncode == 2 and "'max_steps'" in result.stderr and not out.exists()
