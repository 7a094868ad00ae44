"""The engine's pure parts: config overrides, warmup schedule, batching, optimizer groups."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import train_utils as tu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULTS = {"seed": 42, "learning_rate": 1e-3, "use_amp": False, "output_dir": "out", "model_config": {"d": 1},
            "text_column": None, "warmup_steps": 0, "warmup_proportion": 0.1}


# ---------------------------------------------------------------------------- config
def test_overrides_are_python_literals_checked_against_defaults():
    cfg = tu.parse_config(DEFAULTS, ["--seed=7", "--learning_rate=3e-4", "--use_amp=False", "--output_dir=/tmp/x",
                                     "--model_config={'d': 2}", "--text_column=1"])
    assert cfg["seed"] == 7 and cfg["learning_rate"] == 3e-4 and cfg["output_dir"] == "/tmp/x"
    assert cfg["use_amp"] is False  # the tutorial's type=bool bug made "False" truthy
    assert cfg["model_config"] == {"d": 2} and cfg["text_column"] == 1
    assert DEFAULTS["seed"] == 42, "defaults must not be mutated"


def test_int_is_accepted_for_a_float_key_and_space_separated_values():
    cfg = tu.parse_config(DEFAULTS, ["--learning_rate", "1", "--use_amp=true"])
    assert cfg["learning_rate"] == 1.0 and isinstance(cfg["learning_rate"], float)
    assert cfg["use_amp"] is True


def test_unknown_key_names_closest_valid_keys():
    with pytest.raises(tu.ConfigError, match=r"unknown config key 'lerning_rate'.*closest valid keys: learning_rate"):
        tu.parse_config(DEFAULTS, ["--lerning_rate=1e-4"])


@pytest.mark.parametrize("arg, message", [
    ("--seed=1.5", r"'seed'.*must be int.*got float 1.5"),
    ("--use_amp=1", r"'use_amp'.*must be True or False"),
    ("--learning_rate=fast", r"'learning_rate'.*must be float.*got str 'fast'"),
])
def test_wrong_type_names_the_key(arg, message):
    with pytest.raises(tu.ConfigError, match=message):
        tu.parse_config(DEFAULTS, [arg])


def test_config_files_py_and_json_and_command_line_wins(tmp_path):
    py = tmp_path / "preset.py"
    py.write_text("seed = 3\nlearning_rate = 5e-5\n")
    js = tmp_path / "preset.json"
    js.write_text(json.dumps({"seed": 4, "_comment": "ignored"}))
    assert tu.parse_config(DEFAULTS, ["--config", str(py)])["learning_rate"] == 5e-5
    assert tu.parse_config(DEFAULTS, ["--seed=9", f"--config={py}"])["seed"] == 9
    assert tu.parse_config(DEFAULTS, [f"--config={js}"])["seed"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"sed": 1}')
    with pytest.raises(tu.ConfigError, match=r"unknown config key 'sed'.*bad.json.*closest valid keys: seed"):
        tu.parse_config(DEFAULTS, [f"--config={bad}"])


def test_every_preset_in_configs_parses_against_train_config():
    import train

    for name in ("lcsts_new.py", "csl_title.py", "custom_json.json"):
        cfg = tu.parse_config(train.CONFIG, [f"--config={name}"])
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


# ---------------------------------------------------------------------------- schedule
def _lrs(config, total):
    import paddle

    model = paddle.nn.Linear(2, 2)
    _, sched = tu.build_optimizer(model, {**config, "adam_epsilon": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0}, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(sched.get_lr())
        sched.step()
    return lrs


def test_warmup_proportion_then_linear_decay():
    lrs = _lrs({"learning_rate": 1.0, "warmup_steps": 0, "warmup_proportion": 0.2}, 10)
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_positive_warmup_steps_win_over_proportion():
    lrs = _lrs({"learning_rate": 2.0, "warmup_steps": 4, "warmup_proportion": 0.5}, 20)
    assert lrs[4] == pytest.approx(2.0) and lrs[2] == pytest.approx(1.0)
    assert tu.resolve_warmup({"warmup_steps": 4, "warmup_proportion": 0.5}) == 4
    assert tu.resolve_warmup({"warmup_steps": 0, "warmup_proportion": 0.5}) == 0.5


def test_no_weight_decay_on_bias_and_norm():
    import paddle

    class Tiny(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.proj = paddle.nn.Linear(4, 4)
            self.layer_norm = paddle.nn.LayerNorm(4)

    model = Tiny()
    names = {n for n, p in model.named_parameters() if p.name in tu.no_decay_param_names(model)}
    assert names == {"proj.bias", "layer_norm.weight", "layer_norm.bias"}


# ---------------------------------------------------------------------------- batching
def test_length_grouped_batches_cover_everything_once_and_pad_little():
    rng = np.random.RandomState(0)
    lengths = list(rng.randint(5, 400, size=1000))
    batches = tu.length_grouped_batches(lengths, 16, seed=1, epoch=0)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert max(lengths[i] for i in batches[0]) == max(lengths)  # an OOM shows on the first step
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    random_padded = sum(len(b) * max(lengths[i] for i in b) for b in tu.shuffled_batches(1000, 16, 1, 0))
    assert padded < 0.7 * random_padded
    assert tu.length_grouped_batches(lengths, 16, 1, 0) == batches  # deterministic for resume
    assert tu.length_grouped_batches(lengths, 16, 1, 1) != batches  # reshuffled every epoch


def test_ranks_split_the_global_batch_of_a_single_process():
    lengths = list(range(1, 102))
    single = tu.epoch_batches(lengths, 8, world_size=1, rank=0, seed=3, epoch=0)
    r0 = tu.epoch_batches(lengths, 4, world_size=2, rank=0, seed=3, epoch=0)
    r1 = tu.epoch_batches(lengths, 4, world_size=2, rank=1, seed=3, epoch=0)
    assert len(r0) == len(r1) == len(single)
    for s, a, b in zip(single[:-1], r0, r1):
        assert sorted(s) == sorted(a + b) and not set(a) & set(b)
    assert len(r0[-1]) == len(r1[-1]) == 4  # the short last batch is completed so ranks stay in step


def test_max_steps_from_epochs_and_accumulation():
    assert tu.compute_max_steps({"gradient_accumulation_steps": 2, "max_steps": -1, "num_train_epochs": 3}, 11) == (18, 6)
    assert tu.compute_max_steps({"gradient_accumulation_steps": 1, "max_steps": 5, "num_train_epochs": 3}, 11) == (5, 11)


# ---------------------------------------------------------------------------- device and AMP
def test_gpu_request_without_cuda_is_a_clear_error_and_auto_picks_cpu():
    import paddle

    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(tu.ConfigError, match="device='gpu'.*paddlepaddle-gpu.*--device=cpu"):
        tu.setup_device("gpu")
    assert tu.setup_device("auto") == "cpu" and paddle.get_device() == "cpu"
    with pytest.raises(tu.ConfigError, match="device must be"):
        tu.setup_device("tpu")


def test_amp_on_cpu_warns_once_and_runs_fp32(capsys):
    tu._warned.clear()
    assert tu.resolve_amp({"use_amp": True, "amp_dtype": "float16"}, "cpu") == (False, "float16")
    assert tu.resolve_amp({"use_amp": True, "amp_dtype": "float16"}, "cpu") == (False, "float16")
    assert capsys.readouterr().out.count("use_amp=True ignored") == 1
    assert tu.resolve_amp({"use_amp": True, "amp_dtype": "bfloat16"}, "gpu") == (True, "bfloat16")
    with pytest.raises(tu.ConfigError, match="amp_dtype"):
        tu.resolve_amp({"use_amp": True, "amp_dtype": "int8"}, "gpu")
