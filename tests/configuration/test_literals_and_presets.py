"""Issue #22, config messages: a value that is not a Python literal says so (not "must be dict, got str"); a .py preset
is said (README, --help) to run as Python, its helper names starting with '_' stay out of the config and the
unknown-key error says how to keep one out."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paddle_finetune.configuration.parse import config_from_values, not_a_literal, parse_config
from paddle_finetune.errors import ConfigError, HelpRequested
from paddle_finetune.paths import PROJECT_ROOT


def error_line(capsys, argv):
    import train

    with pytest.raises(SystemExit) as e:
        train.cli(argv)
    assert e.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_reported_case_an_expression_in_model_config_is_named(capsys):
    line = error_line(capsys, ["--model_config={'d_model': 2**7}"])
    assert line.startswith("error: --model_config={'d_model': 2**7} is not a Python literal: 2**7 is an expression, "
                           "and values are read as literals, never run; write the value itself")


@pytest.mark.parametrize("arg, named", [
    ("--learning_rate=1e-3*2", "1e-3*2 is an expression"),
    ("--model_config=dict(d_model=128)", "dict(d_model=128) is an expression"),
    ("--model_config={'d_model': size}", "size is a name"),
    ("--model_config={'d_model': 128", "'{' was never closed"),
])
def test_other_non_literals_are_named_too(arg, named):
    import train

    with pytest.raises(ConfigError) as e:
        parse_config(train.CONFIG, [arg])
    assert f"is not a Python literal: {named}" in str(e.value)


@settings(max_examples=200, deadline=None)
@given(value=st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                          | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=8))
def test_every_literal_is_a_literal(value):
    """No false alarm: repr() of any literal value reads back as one."""
    assert not_a_literal(repr(value)) is None


def test_words_stay_words_for_text_keys():
    import train

    cfg = parse_config(train.CONFIG, ["--wandb_run_name=2**7", "--text_column=content"])
    assert cfg["wandb_run_name"] == "2**7" and cfg["text_column"] == "content"


# ---------------------------------------------------------------------------- presets
def test_helper_names_in_a_py_preset_stay_out_and_the_unknown_key_error_says_how(tmp_path):
    import train

    good = tmp_path / "good.py"
    good.write_text("import math\n_width = 64\n_double = lambda x: 2 * x\n"
                    "model_config = {'d_model': _double(_width)}\nlearning_rate = math.sqrt(1e-6)\n", encoding="utf-8")
    cfg = config_from_values(train.CONFIG, str(good))
    assert cfg["model_config"]["d_model"] == 128 and cfg["learning_rate"] == pytest.approx(1e-3)
    bad = tmp_path / "bad.py"
    bad.write_text("width = 64\nmodel_config = {'d_model': 2 * width}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        parse_config(train.CONFIG, ["--config", str(bad)])
    assert str(e.value) == (f"unknown config key 'width' (from {bad}:1); a .py preset's own helper names must start with '_' "
                            "to stay out of the config")
    json_preset = tmp_path / "bad.json"
    json_preset.write_text('{"width": 64}', encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        parse_config(train.CONFIG, ["--config", str(json_preset)])
    assert str(e.value) == f"unknown config key 'width' (from {json_preset})"  # a JSON preset runs nothing: no helpers


def test_help_and_readme_say_a_py_preset_runs_as_python():
    import train

    with pytest.raises(HelpRequested) as e:
        parse_config(train.CONFIG, ["--help"])
    assert "\n                a .py file is run as Python (use only files you trust)" in e.value.text
    with open(f"{PROJECT_ROOT}/README.md", encoding="utf-8") as f:
        readme = f.read()
    assert "runs it as Python" in readme and "only presets you trust" in readme
