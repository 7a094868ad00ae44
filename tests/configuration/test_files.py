"""configuration.files: .yaml/.yml, .py and .json config files, each key with the line it is on where the format
tells it, so a bad key or value names file:line; the presets in configs/ in YAML beside their .py/.json twins."""
import json
import os

import pytest

import train
from helpers import ROOT
from paddle_finetune.configuration.files import read_config_file
from paddle_finetune.configuration.parse import config_from_values, parse_config
from paddle_finetune.errors import ConfigError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def error_of(fn, *args):
    with pytest.raises(ConfigError) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


# ---------------------------------------------------------------------------- YAML values
def test_yaml_values_mean_what_they_mean_in_the_python_and_json_presets(tmp_path):
    path = write(tmp_path / "x.yaml", "# a preset\n"
                                      "learning_rate: 5e-5   # YAML 1.1 alone would read a string\n"
                                      "scale_loss: 1E3\n"
                                      "text_column: None\n"
                                      "summary_column: ~\n"
                                      "model_config:\n"
                                      "  d_model: 64\n"
                                      "report_to: [wandb, visualdl]\n"
                                      "use_amp: true\n"
                                      "wandb_run_name: '2024'\n"
                                      "_note: not a setting\n")
    entries = read_config_file(path)
    assert entries == {"learning_rate": (5e-05, f"{path}:2"), "scale_loss": (1000.0, f"{path}:3"),
                       "text_column": (None, f"{path}:4"), "summary_column": (None, f"{path}:5"),
                       "model_config": ({"d_model": 64}, f"{path}:6"), "report_to": (["wandb", "visualdl"], f"{path}:8"),
                       "use_amp": (True, f"{path}:9"), "wandb_run_name": ("2024", f"{path}:10")}
    cfg = parse_config(train.CONFIG, [f"--config={path}"])
    assert cfg["model_config"] == {**train.CONFIG["model_config"], "d_model": 64}, "a partial dict merges, as from .py"
    assert cfg["report_to"] == "wandb,visualdl" and cfg["learning_rate"] == 5e-5
    # a string that only looks like a float elsewhere stays a string; SafeLoader itself is left as it was
    import yaml

    assert yaml.safe_load("x: 5e-5") == {"x": "5e-5"}


def test_yaml_merge_keys_and_empty_files(tmp_path):
    path = write(tmp_path / "m.yml", "_base: &base\n  seed: 3\n  logging_steps: 7\n<<: *base\nseed: 4\n")
    assert {k: v for k, (v, _) in read_config_file(path).items()} == {"seed": 4, "logging_steps": 7}
    assert read_config_file(write(tmp_path / "empty.yaml", "# nothing set yet\n")) == {}


# ---------------------------------------------------------------------------- errors name file:line
@pytest.mark.parametrize("text, message", [
    ("seed: 1\nlearning_rate: fast\n", "config key 'learning_rate' (from {path}:2) must be float like its default 0.001, got str 'fast'"),
    ("seed: 1\n\nsed: 3\n", "unknown config key 'sed' (from {path}:3); closest valid keys: seed"),
    ("seed: 1\nseed: 2\n", "{path}:2: key 'seed' is set twice (first on line 1)"),
    ("model_config:\n  d_model: 1\n  d_model: 2\n", "{path}:3: key 'd_model' is set twice (first on line 2)"),
    ("seed: [1\n", "{path}:2: malformed YAML config: expected ',' or ']', but got '<stream end>' (column 1)"),
    ("seed: 1\n  learning_rate: 2\n", "{path}:2: malformed YAML config: mapping values are not allowed here (column 16)"),
    ("- seed\n- 1\n", "{path}:1: a YAML config must be a mapping of key: value, got a list"),
    ("just a string\n", "{path}:1: a YAML config must be a mapping of key: value, got a single value 'just a string'"),
    ("1: 2\n", "{path}:1: config keys are names, got 1"),
    ("device: tpu\n", "config key 'device' (from {path}:1) must be 'auto', 'gpu' or 'cpu' (any case), got 'tpu'"),
])
def test_a_bad_yaml_config_is_one_line_naming_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.yaml", text)
    assert error_of(parse_config, train.CONFIG, [f"--config={path}"]) == message.format(path=path)
    assert error_of(config_from_values, train.CONFIG, path) == message.format(path=path), "run('x.yaml') says the same"


def test_python_configs_name_the_line_json_configs_the_file(tmp_path):
    py = write(tmp_path / "p.py", "import math\n\nseed = 1\nlearning_rate = str(math.pi)[:1]\n")
    assert error_of(parse_config, train.CONFIG, [f"--config={py}"]) == (
        f"config key 'learning_rate' (from {py}:4) must be float like its default 0.001, got str '3'")
    js = write(tmp_path / "j.json", '{"seed": 1, "seed": 2}')
    assert error_of(parse_config, train.CONFIG, [f"--config={js}"]) == f"{js}: key 'seed' is set twice"
    txt = write(tmp_path / "c.toml", "seed = 1\n")
    assert error_of(parse_config, train.CONFIG, [f"--config={txt}"]) == f"config file {txt} must end in .yaml, .yml, .py or .json"


# ---------------------------------------------------------------------------- the presets
PRESETS = [("lcsts_new.yaml", "lcsts_new.py"), ("csl_title.yaml", "csl_title.py"), ("custom_json.yaml", "custom_json.json")]


@pytest.mark.parametrize("yaml_name, twin", PRESETS)
def test_every_yaml_preset_loads_to_the_config_of_its_twin(yaml_name, twin):
    from_yaml = parse_config(train.CONFIG, [f"--config={yaml_name}"])
    assert from_yaml == parse_config(train.CONFIG, [f"--config={twin}"])
    assert from_yaml != train.CONFIG and from_yaml == config_from_values(train.CONFIG, f"configs/{yaml_name}")


def test_every_preset_has_a_yaml_twin():
    names = sorted(os.listdir(os.path.join(ROOT, "configs")))
    stems = {os.path.splitext(n)[0] for n in names}
    assert all(f"{stem}.yaml" in names for stem in stems), names


def test_the_lcsts_recipe_names_its_target_and_style():
    cfg = parse_config(train.CONFIG, ["--config=lcsts_new.yaml"])
    assert (cfg["rouge_style"], cfg["dataset_name"], cfg["pretrained_model"]) == ("chars", "lcsts_new", "models/bart-base-chinese")
    with open(os.path.join(ROOT, "configs", "lcsts_new.yaml"), encoding="utf-8") as f:
        text = f.read()
    assert "ROUGE-L 38.78" in text and "ESTIMATE" in text and "tools/estimate_lcsts.py" in text


# ---------------------------------------------------------------------------- the Python API
def test_run_takes_a_yaml_preset(tmp_path):
    out = tmp_path / "out"
    path = write(tmp_path / "tiny.yaml", f"""
output_dir: {json.dumps(str(out))}
report_to: none
max_steps: 2
save_steps: 2
max_eval_samples: 4
train_batch_size: 8
device: cpu
model_config: {{d_model: 16, encoder_layers: 1, decoder_layers: 1, encoder_attention_heads: 2,
               decoder_attention_heads: 2, encoder_ffn_dim: 32, decoder_ffn_dim: 32}}
""")
    results = train.run(path, rouge_style="words")
    assert results["global_step"] == 2 and results["eval_rouge_style"] == "words"
    saved = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert saved["model_config"]["d_model"] == 16 and saved["rouge_style"] == "words"
    with pytest.raises(ConfigError, match=r"unknown config key 'sed' \(from .*bad.yaml:1\)"):
        train.run(write(tmp_path / "bad.yaml", "sed: 1\n"))
