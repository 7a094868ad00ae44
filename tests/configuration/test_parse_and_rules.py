"""configuration.py: --key=value overrides checked against the defaults, --config files, dict merging,
bare flags, normalised values, --help from the trainer's source, and the checks of validate_config."""
import json
import math
import subprocess
import sys

from paddle_finetune.paths import PROJECT_ROOT
import pytest

from paddle_finetune.errors import HelpRequested

from paddle_finetune.configuration.help import HELP_WIDTH, compact_repr, config_comments, format_help
from paddle_finetune.configuration.parse import merge_value, parse_config, parse_report_to
from paddle_finetune.configuration.rules import at_least, at_most, check_max_lengths, check_model_config, check_rules, finite, less_than, model_config_fields, non_negative, one_of, positive, resolve_greater_is_better
from paddle_finetune.errors import ConfigError

ROOT = PROJECT_ROOT
DEFAULTS = {"seed": 42, "learning_rate": 1e-3, "use_amp": False, "output_dir": "out", "model_config": {"d": 1, "e": 2},
            "text_column": None, "warmup_steps": 0, "warmup_proportion": 0.1, "do_train": True, "device": "auto",
            "report_to": "wandb", "wandb_run_name": "", "max_steps": -1}


def parse(*argv, defaults=DEFAULTS):
    return parse_config(defaults, list(argv))


def error_of(fn, *args, **kwargs):
    """The ConfigError message fn raises; every one is a single line (the entry point prints it after 'error: ')."""
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    message = str(e.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------------------- overrides and types
def test_overrides_are_python_literals_checked_against_defaults():
    cfg = parse("--seed=7", "--learning_rate=3e-4", "--use_amp=False", "--output_dir=/tmp/x", "--model_config={'d': 2}", "--text_column=1")
    assert cfg["seed"] == 7 and cfg["learning_rate"] == 3e-4 and cfg["output_dir"] == "/tmp/x"
    assert cfg["use_amp"] is False  # the tutorial's type=bool bug made "False" truthy
    assert cfg["model_config"] == {"d": 2, "e": 2} and cfg["text_column"] == 1
    assert DEFAULTS["seed"] == 42 and DEFAULTS["model_config"] == {"d": 1, "e": 2}, "defaults must not be mutated"


def test_int_is_accepted_for_a_float_key_and_space_separated_values():
    cfg = parse("--learning_rate", "1", "--use_amp=true")
    assert cfg["learning_rate"] == 1.0 and isinstance(cfg["learning_rate"], float)
    assert cfg["use_amp"] is True


def test_unknown_key_names_closest_valid_keys():
    message = error_of(parse, "--lerning_rate=1e-4")
    assert "unknown config key 'lerning_rate'" in message and "closest valid keys: learning_rate" in message


@pytest.mark.parametrize("arg, message", [
    ("--seed=1.5", r"'seed'.*must be int.*got float 1.5"),
    ("--use_amp=1", r"'use_amp'.*must be True or False"),
    ("--learning_rate=fast", r"'learning_rate'.*must be float.*got str 'fast'"),
    ("--learning_rate=None", r"'learning_rate'.*must be float.*got None"),
    ("--seed=None", r"'seed'.*must be int.*got None"),
    ("--model_config=[1]", r"'model_config'.*must be dict"),
])
def test_wrong_type_names_the_key(arg, message):
    with pytest.raises(ConfigError, match=message):
        parse(arg)


def test_a_none_default_takes_any_literal():
    assert parse("--text_column=None")["text_column"] is None
    assert parse("--text_column=summary")["text_column"] == "summary"


def test_str_keys_take_the_text_as_typed():
    """--wandb_run_name=2024 used to be the int 2024 (a type error); --report_to=none used to be None."""
    assert parse("--wandb_run_name=2024")["wandb_run_name"] == "2024"
    assert parse("--output_dir=True")["output_dir"] == "True"
    assert parse("--output_dir='quoted'")["output_dir"] == "quoted"
    assert parse("--report_to=none")["report_to"] == "none"


def test_config_files_py_and_json_and_command_line_wins(tmp_path):
    py = tmp_path / "preset.py"
    py.write_text("seed = 3\nlearning_rate = 5e-5\n")
    js = tmp_path / "preset.json"
    js.write_text(json.dumps({"seed": 4, "_comment": "ignored"}))
    assert parse("--config", str(py))["learning_rate"] == 5e-5
    assert parse("--seed=9", f"--config={py}")["seed"] == 9
    assert parse(f"--config={js}")["seed"] == 4
    bad = tmp_path / "bad.json"
    bad.write_text('{"sed": 1}')
    with pytest.raises(ConfigError, match=r"unknown config key 'sed'.*bad.json.*closest valid keys: seed"):
        parse(f"--config={bad}")


def test_every_preset_in_configs_parses_against_train_config():
    import train

    for name in ("lcsts_new.py", "csl_title.py", "custom_json.json"):
        cfg = parse_config(train.CONFIG, [f"--config={name}"])
        assert cfg["output_dir"] != train.CONFIG["output_dir"], name
    assert parse_config(train.CONFIG, ["--config=lcsts_new.py"])["device"] == "gpu"


# ---------------------------------------------------------------------------- dict-valued keys merge
def test_a_partial_dict_merges_one_level_into_the_default():
    assert parse("--model_config={'d': 9}")["model_config"] == {"d": 9, "e": 2}
    assert parse("--model_config={'f': 3}")["model_config"] == {"d": 1, "e": 2, "f": 3}
    nested = {"model_config": {"a": {"x": 1, "y": 2}, "b": 1}}
    assert parse_config(nested, ["--model_config={'a': {'x': 5}}"])["model_config"] == {"a": {"x": 5}, "b": 1}


def test_dicts_merge_from_config_files_and_the_command_line_on_top(tmp_path):
    py = tmp_path / "preset.py"
    py.write_text("model_config = dict(e=20)\n")
    js = tmp_path / "preset.json"
    js.write_text(json.dumps({"model_config": {"d": 10}}))
    assert parse(f"--config={py}")["model_config"] == {"d": 1, "e": 20}
    assert parse(f"--config={js}")["model_config"] == {"d": 10, "e": 2}
    assert parse(f"--config={py}", f"--config={js}")["model_config"] == {"d": 10, "e": 20}
    assert parse("--model_config={'d': 5}", f"--config={py}")["model_config"] == {"d": 5, "e": 20}  # the command line wins


def test_train_model_config_partial_keeps_the_small_bart():
    """--model_config="{'d_model': 96}" replaced the whole dict: a 6+6-layer BART with 8M parameters."""
    import train

    cfg = parse_config(train.CONFIG, ["--model_config={'d_model': 96}"])
    assert cfg["model_config"] == {**train.CONFIG["model_config"], "d_model": 96}
    assert train.CONFIG["model_config"]["d_model"] == 128


def test_merge_value():
    assert merge_value({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    assert merge_value({"a": 1}, 3) == 3
    assert merge_value("x", "y") == "y"


# ---------------------------------------------------------------------------- bare flags
def test_a_bare_bool_key_means_true_and_does_not_take_the_next_argument():
    cfg = parse("--use_amp", "--seed=3")
    assert cfg["use_amp"] is True and cfg["seed"] == 3
    assert parse("--do_train")["do_train"] is True
    assert parse("--do_train", "--do_train=False")["do_train"] is False
    assert parse("--use-amp")["use_amp"] is True  # dashes as in --do-train


def test_a_bare_bool_key_followed_by_a_value_says_how_to_write_it():
    message = error_of(parse, "--do_train", "False")
    assert "unexpected argument 'False' after --do_train" in message and "--do_train=False" in message


def test_a_bare_unknown_key_is_an_unknown_key_not_a_missing_value():
    message = error_of(parse, "--do_eval")
    assert "unknown config key 'do_eval'" in message and "closest valid keys: do_train" in message
    assert "needs a value" not in message
    assert "unknown config key 'do_eval'" in error_of(parse, "--do_eval", "True")


def test_a_bare_non_bool_key_needs_a_value():
    assert error_of(parse, "--seed") == "argument --seed needs a value: --seed=VALUE"
    assert error_of(parse, "--seed", "--use_amp") == "argument --seed needs a value: --seed=VALUE"
    assert error_of(parse, "--config") == "argument --config needs a value: --config=VALUE"
    assert parse("--seed", "5")["seed"] == 5


def test_a_stray_argument_is_refused():
    assert "unexpected argument 'train.jsonl'" in error_of(parse, "train.jsonl")


# ---------------------------------------------------------------------------- device and report_to
@pytest.mark.parametrize("given, expected", [("GPU", "gpu"), ("Cpu", "cpu"), ("auto", "auto"), ("AUTO", "auto"), (" gpu ", "gpu")])
def test_device_is_case_insensitive_and_normalised(given, expected):
    assert parse(f"--device={given}")["device"] == expected


def test_device_is_normalised_in_config_files_and_unknown_devices_fail(tmp_path):
    js = tmp_path / "tutorial.json"
    js.write_text(json.dumps({"device": "GPU"}))  # the original tutorial's spelling
    assert parse(f"--config={js}")["device"] == "gpu"
    message = error_of(parse, "--device=tpu")
    assert "'device'" in message and "'tpu'" in message and "'auto', 'gpu' or 'cpu'" in message
    assert "'device'" in error_of(parse, "--device=None")


@pytest.mark.parametrize("value, expected", [
    ("wandb", ["wandb"]), ("visualdl", ["visualdl"]), ("none", []), ("", []), ("None", []),
    ("wandb,visualdl", ["wandb", "visualdl"]), (" wandb , VisualDL ", ["wandb", "visualdl"]),
    (["wandb", "visualdl"], ["wandb", "visualdl"]), (("visualdl",), ["visualdl"]), ([], []),
    ("wandb,wandb", ["wandb"]),
])
def test_parse_report_to(value, expected):
    assert parse_report_to(value) == expected


@pytest.mark.parametrize("value, message", [
    ("tensorboard", r"unknown target 'tensorboard'.*valid: wandb, visualdl, or 'none'"),
    ("wandb,tensorbord", r"unknown target 'tensorbord'"),
    (["wandb", 3], r"must be a string or a list of strings"),
    (5, r"must be a string or a list of strings"),
    ("none,wandb", r"'none' cannot be combined"),
])
def test_parse_report_to_refuses_unknown_targets(value, message):
    with pytest.raises(ConfigError, match=message):
        parse_report_to(value)


def test_report_to_takes_a_string_or_a_list_and_is_stored_as_one_string(tmp_path):
    assert parse("--report_to=wandb,visualdl")["report_to"] == "wandb,visualdl"
    assert parse("--report_to=['wandb', 'visualdl']")["report_to"] == "wandb,visualdl"
    assert parse("--report_to=[]")["report_to"] == "none"
    js = tmp_path / "r.json"
    js.write_text(json.dumps({"report_to": ["visualdl"]}))
    assert parse(f"--config={js}")["report_to"] == "visualdl"
    assert "(from --report_to)" in error_of(parse, "--report_to=tensorboard")
    # only report_to takes a list: other str keys still must be str
    assert "'output_dir'" in error_of(parse, "--output_dir=['a']")


# ---------------------------------------------------------------------------- --help from the source
SOURCE = '''"""A trainer."""
import os

OTHER = dict(a=1)  # a dict defining fewer of the keys

CONFIG = dict(
    # --- run ---
    seed=42,  # seeds everything
    # Two lines of
    # explanation above.
    flag=True,
    plain=3,
    # --- model ---
    model_config=dict(  # the model
        width=8,  # an inner comment, not shown
        depth=2,
    ),
    path=os.path.join("a", "b"),  # computed default
)
'''


def test_config_comments_beside_above_and_sections(tmp_path):
    src = tmp_path / "trainer.py"
    src.write_text(SOURCE)
    comments = config_comments(str(src), ["seed", "flag", "plain", "model_config", "path"])
    assert comments == {
        "seed": ("run", "seeds everything"),
        "flag": ("run", "Two lines of explanation above."),
        "plain": ("run", ""),
        "model_config": ("model", "the model"),
        "path": ("model", "computed default"),
    }


def test_config_comments_of_a_dict_literal_and_a_missing_file(tmp_path):
    src = tmp_path / "trainer.py"
    src.write_text('CONFIG = {\n    # --- run ---\n    "seed": 1,  # the seed\n}\n')
    assert config_comments(str(src), ["seed"]) == {"seed": ("run", "the seed")}
    assert config_comments(str(tmp_path / "missing.py"), ["seed"]) == {}


def test_format_help_lists_every_key_with_comment_default_and_section(tmp_path):
    src = tmp_path / "trainer.py"
    src.write_text(SOURCE)
    defaults = {"seed": 42, "flag": True, "plain": 3, "model_config": {"width": 8, "depth": 2}, "path": "a/b", "added_later": 0}
    text = format_help(defaults, "trainer.py", "A trainer.", str(src))
    lines = text.splitlines()
    assert lines.index("run:") < lines.index("model:") < lines.index("keys:")  # keys not in the source still appear
    assert any(line.startswith("  --seed=42") and line.endswith("seeds everything") for line in lines)
    assert "Two lines of explanation above." in text and "an inner comment" not in text
    assert "--model_config={'width': 8, 'depth': 2}" in text and "--path='a/b'" in text and "--added_later=0" in text
    assert all(len(line) <= HELP_WIDTH for line in lines[3:]), "help lines fit the width"


def test_compact_repr_breaks_a_long_dict_between_items():
    value = {f"key_{i}": i * 1000 for i in range(20)}
    lines = compact_repr(value, "  --model_config=", width=60)
    assert len(lines) > 1 and all(len(line) <= 60 for line in lines)
    assert " ".join(line.strip() for line in lines) == "--model_config=" + repr(value)
    assert compact_repr(7, "  --seed=") == ["  --seed=7"]


def test_help_wins_wherever_it_stands():
    with pytest.raises(HelpRequested) as e:  # the CLI prints it and exits 0 (library code never exits)
        parse("--bad_key=1", "--help")
    assert "--learning_rate=0.001" in e.value.text


def test_help_through_the_cli_prints_and_exits_0(capsys):
    import train

    with pytest.raises(SystemExit) as e:
        train.cli(["--bad_key=1", "--help"])
    assert e.value.code == 0 and "--learning_rate=0.001" in capsys.readouterr().out


# ---------------------------------------------------------------------------- range rules
@pytest.mark.parametrize("rule, good, bad, wording", [
    (positive, [1, 0.5, 1e-9], [0, -1, -0.5], "must be > 0"),
    (non_negative, [0, 3, 0.0], [-1, -1e-9], "must be >= 0"),
    (finite, [0, -3, 1e300], [math.inf, -math.inf, math.nan], "must be finite"),
    (at_least(1), [1, 2], [0, 0.5], "must be >= 1"),
    (at_most(1), [1, 0], [1.01], "must be <= 1"),
    (less_than(1), [0.99], [1, 2], "must be < 1"),
])
def test_numeric_rules(rule, good, bad, wording):
    assert all(rule(v) is None for v in good)
    assert all(rule(v) == wording for v in bad)
    assert rule(None) == rule("1") == rule(True) == "must be a number"


def test_one_of_and_check_rules_name_the_key_and_value():
    assert one_of("a", "b")("a") is None
    assert one_of("a", "b")("c") == "must be one of 'a', 'b'"
    rules = {"learning_rate": (finite, positive)}
    check_rules({"learning_rate": 1e-3}, rules)
    assert error_of(check_rules, {"learning_rate": math.inf}, rules) == "learning_rate must be finite, got inf"
    assert error_of(check_rules, {"learning_rate": -1.0}, rules) == "learning_rate must be > 0, got -1.0"


TRAINERS = ("train", "train_classification", "train_mlm", "train_clm")


def trainer(name):
    import importlib

    return importlib.import_module(name)


def validate(name, **overrides):
    cfg = {**trainer(name).CONFIG, **overrides}
    trainer(name).validate_config(cfg)
    return cfg


RANGE_CASES = [
    ("learning_rate", 1e400, "must be finite"),  # trained with lr=inf and exited 0
    ("learning_rate", 0.0, "must be > 0"),
    ("learning_rate", -1e-3, "must be > 0"),
    ("num_train_epochs", 0, "must be >= 1 when max_steps <= 0"),  # exited 0 with no checkpoint
    ("warmup_steps", -1, "must be >= 0"),
    ("warmup_proportion", -0.1, "must be >= 0"),
    ("warmup_proportion", 1.5, "must be <= 1"),
    ("logging_steps", 0, "must be > 0"),
    ("save_steps", 0, "must be > 0"),
    ("eval_steps", -1, "must be >= 0"),
    ("save_total_limit", -1, "must be >= 0"),
    ("gradient_accumulation_steps", 0, "must be >= 1"),
    ("weight_decay", -0.01, "must be >= 0"),
    ("max_grad_norm", -1.0, "must be >= 0"),
    ("train_batch_size", 0, "must be > 0"),
    ("eval_batch_size", 0, "must be > 0"),
    ("seed", -1, "must be >= 0"),
    ("early_stopping_patience", -1, "must be >= 0"),
    ("early_stopping_threshold", -0.5, "must be >= 0"),
    ("max_train_samples", -1, "must be >= 0"),
    ("amp_dtype", "float32", "must be one of 'float16', 'bfloat16'"),
]


@pytest.mark.parametrize("name", TRAINERS)
@pytest.mark.parametrize("key, value, wording", RANGE_CASES)
def test_every_trainer_checks_the_shared_ranges(name, key, value, wording):
    message = error_of(validate, name, **{key: value})
    assert message.startswith(f"{key} {wording}") and message.endswith(f", got {value!r}"), message


@pytest.mark.parametrize("name", TRAINERS)
def test_zero_epochs_are_fine_when_max_steps_decides(name):
    validate(name, num_train_epochs=0, max_steps=5)


@pytest.mark.parametrize("name, key, value, wording", [
    ("train", "num_beams", 0, "must be >= 1"),
    ("train", "max_source_length", 0, "must be > 0"),
    ("train", "max_target_length", -1, "must be > 0"),
    ("train", "min_target_length", -1, "must be >= 0"),
    ("train", "dev_size", -1, "must be >= 0"),
    ("train_classification", "max_seq_length", 0, "must be > 0"),
    ("train_mlm", "block_size", 3, "must be >= 4"),
    ("train_mlm", "mlm_probability", 1.0, "must be < 1"),
    ("train_mlm", "mlm_probability", 0.0, "must be > 0"),
    ("train_mlm", "probe_top_k", 0, "must be > 0"),
    ("train_clm", "block_size", 1, "must be >= 2"),
    ("train_clm", "sample_max_new_tokens", 0, "must be > 0"),
])
def test_trainer_specific_ranges(name, key, value, wording):
    assert error_of(validate, name, **{key: value}).startswith(f"{key} {wording}")


def test_min_target_length_above_max_is_refused():
    assert "max_target_length (8) < min_target_length (9)" in error_of(validate, "train", max_target_length=8, min_target_length=9)


# ---------------------------------------------------------------------------- metric_for_best, greater_is_better
@pytest.mark.parametrize("name, metrics", [
    ("train", ("rouge1", "rouge2", "rougeL", "loss")),
    ("train_classification", ("accuracy", "macro_f1", "loss")),
    ("train_mlm", ("perplexity", "loss")),
    ("train_clm", ("perplexity", "loss")),
])
def test_metric_for_best_is_one_of_the_trainers_metrics(name, metrics):
    for metric in metrics:
        validate(name, metric_for_best=metric)
    message = error_of(validate, name, metric_for_best="bleu")
    assert message.startswith("metric_for_best must be one of ") and all(repr(m) in message for m in metrics)


@pytest.mark.parametrize("metric, value, expected", [
    ("loss", None, False), ("perplexity", None, False), ("rougeL", None, True), ("accuracy", None, True),
    ("loss", True, True), ("rougeL", False, False),
])
def test_resolve_greater_is_better(metric, value, expected):
    assert resolve_greater_is_better(metric, value) is expected


@pytest.mark.parametrize("name", TRAINERS)
def test_greater_is_better_must_be_a_bool_or_none(name):
    assert "greater_is_better" in error_of(validate, name, greater_is_better="yes")
    validate(name, greater_is_better=False)


# ---------------------------------------------------------------------------- the keys every CONFIG has
NEW_KEYS = {"do_train": True, "load_best_model_at_end": True, "greater_is_better": None, "early_stopping_patience": 0,
            "early_stopping_threshold": 0.0, "resume_ignore_mismatch": False, "dataset_name": "", "dataset_config_name": "",
            "train_file": "", "dev_file": "", "report_to": "wandb"}


@pytest.mark.parametrize("name, metric", [("train", "rougeL"), ("train_classification", "accuracy"), ("train_mlm", "perplexity"),
                                          ("train_clm", "perplexity")])
def test_every_config_has_the_new_keys(name, metric):
    config = trainer(name).CONFIG
    for key, default in NEW_KEYS.items():
        assert key in config and config[key] == default and type(config[key]) is type(default), (name, key)
    assert config["metric_for_best"] == metric
    keys = list(config)
    assert keys.index("do_train") < keys.index("pretrained_model"), "do_train sits in the run section"


# ---------------------------------------------------------------------------- model_config against the config class
def test_model_config_fields_of_the_paddlenlp_config_classes():
    from paddlenlp.transformers import BartConfig, BertConfig, GPTConfig

    bart, aliases = model_config_fields(BartConfig)
    assert {"d_model", "encoder_layers", "decoder_attention_heads", "dropout", "max_position_embeddings"} <= set(bart)
    assert aliases["num_encoder_layers"] == "encoder_layers" and bart["d_model"] == 768
    bert, _ = model_config_fields(BertConfig)
    gpt, _ = model_config_fields(GPTConfig)
    assert {"hidden_size", "num_attention_heads", "hidden_dropout_prob"} <= set(bert) & set(gpt)
    assert "d_model" not in bert and "seq_length" in gpt


@pytest.mark.parametrize("name, class_name, pairs", [
    ("train", "BartConfig", [("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads")]),
    ("train_classification", "BertConfig", [("hidden_size", "num_attention_heads")]),
    ("train_mlm", "BertConfig", [("hidden_size", "num_attention_heads")]),
    ("train_clm", "GPTConfig", [("hidden_size", "num_attention_heads")]),
])
def test_every_default_model_config_passes_its_class(name, class_name, pairs):
    import paddlenlp.transformers as t

    model_config = trainer(name).CONFIG["model_config"]
    fields = check_model_config(model_config, getattr(t, class_name), pairs)
    assert all(fields[k] == v for k, v in model_config.items())


def test_check_model_config_errors_are_one_line_naming_the_key():
    from paddlenlp.transformers import BartConfig, BertConfig

    pairs = [("d_model", "encoder_attention_heads"), ("d_model", "decoder_attention_heads")]
    base = {"d_model": 128, "encoder_attention_heads": 4, "decoder_attention_heads": 4}
    message = error_of(check_model_config, {**base, "d_modle": 96}, BartConfig, pairs)
    assert "unknown key 'd_modle' for BartConfig" in message and "closest valid keys: d_model" in message
    message = error_of(check_model_config, {**base, "d_model": "x"}, BartConfig, pairs)
    assert "model_config['d_model'] must be int" in message and "got str 'x'" in message
    message = error_of(check_model_config, {**base, "d_model": 96.0}, BartConfig, pairs)
    assert "model_config['d_model'] must be int" in message
    message = error_of(check_model_config, {**base, "scale_embedding": 1}, BartConfig, pairs)
    assert "model_config['scale_embedding'] must be bool" in message
    message = error_of(check_model_config, {**base, "d_model": 90}, BartConfig, pairs)
    assert "model_config['d_model']=90 must be divisible by model_config['encoder_attention_heads']=4" in message
    message = error_of(check_model_config, {**base, "decoder_attention_heads": 5}, BartConfig, pairs)
    assert "model_config['decoder_attention_heads']=5" in message
    message = error_of(check_model_config, {**base, "encoder_attention_heads": 0}, BartConfig, pairs)
    assert "model_config['encoder_attention_heads'] must be > 0" in message
    message = error_of(check_model_config, {"hidden_size": 100, "num_attention_heads": 12}, BertConfig,
                       [("hidden_size", "num_attention_heads")])
    assert "'hidden_size']=100 must be divisible by model_config['num_attention_heads']=12" in message
    assert "must be a dict" in error_of(check_model_config, [1], BertConfig)


def test_check_model_config_accepts_ints_for_floats_aliases_and_class_defaults():
    from paddlenlp.transformers import BartConfig

    fields = check_model_config({"dropout": 0, "num_encoder_layers": 3}, BartConfig, [("d_model", "encoder_attention_heads")])
    assert fields["dropout"] == 0 and fields["encoder_layers"] == 3 and fields["d_model"] == 768  # the class default


def test_a_partial_model_config_merged_into_trains_default_passes():
    """{'d_model': 128} alone failed BART's assertion (12 default heads); merged, the CONFIG's 4 heads apply."""
    import train

    cfg = parse_config(train.CONFIG, ["--model_config={'d_model': 96}"])
    validate("train", model_config=cfg["model_config"])
    message = error_of(validate, "train", model_config={**train.CONFIG["model_config"], "d_model": 90})
    assert "'d_model']=90" in message


# ---------------------------------------------------------------------------- lengths within the model's positions
def test_check_max_lengths():
    check_max_lengths({"max_source_length": 1024, "max_target_length": 32}, 1024, "pretrained_model 'bart-base'")
    message = error_of(check_max_lengths, {"max_source_length": 1025}, 1024, "pretrained_model 'bart-base'")
    assert message == "max_source_length=1025 exceeds the model's max_position_embeddings=1024 (pretrained_model 'bart-base')"


def test_validate_checks_lengths_against_a_model_built_from_model_config():
    message = error_of(validate, "train", max_source_length=300)  # the default small BART has 256 positions
    assert message == "max_source_length=300 exceeds the model's max_position_embeddings=256 (model_config)"
    validate("train", max_source_length=300, model_config={**trainer("train").CONFIG["model_config"], "max_position_embeddings": 320})
    assert "max_seq_length=600" in error_of(validate, "train_classification", max_seq_length=600)
    validate("train", max_source_length=300, pretrained_model="bart-base")  # checked once the model is loaded


# ---------------------------------------------------------------------------- the real entry point
def run_train(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "train.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_cli_help_lists_every_key_with_default():
    import train

    result = run_train("--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.split())
    for key, value in train.CONFIG.items():
        if isinstance(value, dict):
            assert f"--{key}={{" in flat and all(f"{k!r}: {v!r}" in flat for k, v in value.items()), key
        else:
            assert f"--{key}={value!r}" in flat, key


def test_cli_bad_key_exits_nonzero_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = run_train("--learning_rte=1e-3", f"--output_dir={out}")
    assert result.returncode == 2
    assert "unknown config key 'learning_rte'" in result.stderr and "learning_rate" in result.stderr
    assert not out.exists()
    result = run_train("--max_steps=ten", f"--output_dir={out}")
    assert result.returncode == 2 and "'max_steps'" in result.stderr and not out.exists()
