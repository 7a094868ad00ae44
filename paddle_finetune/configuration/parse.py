"""Reading a configuration: defaults <- --config FILE <- --key=value, each value a Python literal
checked against the type of its default, and the values normalised to one spelling (device, report_to).

Imports: the standard library; of the project `errors`, `paths`, `configuration.files` and `configuration.help`.
"""
import ast
import copy
import difflib
import os
import re

from paddle_finetune.configuration.files import find_config_file, load_config_file, read_config_file  # noqa: F401
from paddle_finetune.configuration.help import format_help
from paddle_finetune.errors import ConfigError, HelpRequested
from paddle_finetune.paths import PROJECT_ROOT


def _closest_keys(key, keys):
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.5)
    return f"; closest valid keys: {', '.join(close)}" if close else ""


PRESET_HELPER_HINT = "; a .py preset's own helper names must start with '_' to stay out of the config"


def _unknown_key(key, keys, source):
    hint = PRESET_HELPER_HINT if re.search(r"\.py(:\d+)?$", str(source)) else ""  # "file.py" or "file.py:LINE"
    return ConfigError(f"unknown config key {key!r} (from {source}){_closest_keys(key, keys)}{hint}")


# ----------------------------------------------------------------------------
# values normalised while parsing: the rest of the code sees one spelling
# ----------------------------------------------------------------------------
DEVICES = ("auto", "gpu", "cpu")
REPORT_TO_CHOICES = ("wandb", "visualdl")


def normalise_device(value, source="device"):
    """'GPU', 'Cpu', ' auto ' -> 'gpu', 'cpu', 'auto' (the original tutorial's config says 'GPU')."""
    if isinstance(value, str) and value.strip().lower() in DEVICES:
        return value.strip().lower()
    raise ConfigError(f"config key 'device' (from {source}) must be 'auto', 'gpu' or 'cpu' (any case), got {value!r}")


def parse_report_to(value):
    """'wandb', 'wandb,visualdl', ['wandb', 'visualdl'] -> a list of targets; 'none', '' or [] -> []."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = list(value)
    else:
        raise ConfigError(f"report_to must be a string or a list of strings, got {value!r}")
    targets = []
    for item in (v.strip().lower() for v in items):
        if item in ("", "none"):
            continue
        if item not in REPORT_TO_CHOICES:
            raise ConfigError(f"report_to: unknown target {item!r} in {value!r}; valid: {', '.join(REPORT_TO_CHOICES)}, or 'none'")
        if item not in targets:
            targets.append(item)
    if "none" in [v.strip().lower() for v in items] and targets:
        raise ConfigError(f"report_to: 'none' cannot be combined with other targets, got {value!r}")
    return targets


def normalise_report_to(value, source="report_to"):
    """Any accepted spelling -> 'wandb', 'wandb,visualdl' or 'none': one string in train_config.json."""
    try:
        return ",".join(parse_report_to(value)) or "none"
    except ConfigError as e:
        raise ConfigError(f"{e} (from {source})") from None


def normalise_has_header(value, source="has_header"):
    """"auto" (any case), True or False: whether CSV/TSV data files start with a header row."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("auto", "true", "false"):
        return {"auto": "auto", "true": True, "false": False}[value.strip().lower()]
    raise ConfigError(f"config key 'has_header' (from {source}) must be 'auto', True or False, got {value!r}")


# key -> (value, source) -> normalised value; each does its own type check (report_to takes a list too).
NORMALISERS = {"device": normalise_device, "report_to": normalise_report_to, "has_header": normalise_has_header}


# ----------------------------------------------------------------------------
# one override
# ----------------------------------------------------------------------------
def check_override(defaults, key, value, source):
    """Type-check one override against its default (nanoGPT's configurator rules, stricter)."""
    if key not in defaults:
        raise _unknown_key(key, defaults, source)
    default = defaults[key]
    if key in NORMALISERS:
        return NORMALISERS[key](value, source)
    if default is None:  # None defaults (text_column, resume_from_checkpoint, ...) take any literal
        return value
    if value is None:  # --learning_rate=None would only fail later, with a traceback
        raise ConfigError(f"config key {key!r} (from {source}) must be {type(default).__name__} like its default {default!r}, got None")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} (from {source}) must be True or False, got {value!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, (list, tuple)) and isinstance(value, (list, tuple)):
        return type(default)(value)
    if type(value) is not type(default):
        raise ConfigError(
            f"config key {key!r} (from {source}) must be {type(default).__name__} like its default "
            f"{default!r}, got {type(value).__name__} {value!r}"
        )
    return value


def merge_value(current, value):
    """A dict given for a dict-valued key updates it one level deep (model_config={'d_model': 96} keeps
    the layers and heads); anything else replaces the current value."""
    if isinstance(current, dict) and isinstance(value, dict):
        return {**current, **value}
    return value


def parse_literal(text):
    """--key=value values are Python literals; bare words stay strings, true/false are forgiven."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


_LITERAL_NODES = (ast.Expression, ast.Constant, ast.Dict, ast.List, ast.Tuple, ast.Set, ast.Load, ast.UnaryOp,
                  ast.UAdd, ast.USub)


def not_a_literal(text):
    """Why text is not a Python literal ("2**7 is an expression"), or None when it is one (or a bare word)."""
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        return f"{e.msg} (column {e.offset})" if text.strip()[:1] in "{[(\"'" else None
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node is tree.body:
            return None  # a bare word: a string where strings go
        if not isinstance(node, _LITERAL_NODES + (ast.Name,)) or isinstance(node, ast.Name) and node.id not in ("True", "False", "None"):
            segment = ast.get_source_segment(text.strip(), node) or type(node).__name__
            kind = "a name" if isinstance(node, ast.Name) else "an expression"
            return f"{segment} is {kind}, and values are read as literals, never run"
    return None


def parse_value(text, default, key=None):
    """A command-line value for a key with this default. A str key takes the text as typed unless it
    is a quoted string or a list: --wandb_run_name=2024 and --report_to=none stay strings. For a number, dict or
    list key, text that is not a Python literal (2**7, dict(a=1)) is a ConfigError saying so."""
    value = parse_literal(text)
    if isinstance(default, str) and not isinstance(value, (str, list)):
        return text
    if value == text and default is not None and not isinstance(default, str):
        why = not_a_literal(text)
        if why:
            raise ConfigError(f"--{key}={text} is not a Python literal: {why}; write the value itself "
                              f"(like its default {default!r})")
    return value


# ----------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------
def parse_config(defaults, argv, prog="train.py", doc="", root=None, source=None):
    """Merge defaults <- --config FILE <- --key=value. Raises ConfigError; HelpRequested (the text) on --help.

    source: the file that defines the defaults (for --help's comments); default root/prog.
    """
    root = root or PROJECT_ROOT
    args = list(argv)
    if "-h" in args or "--help" in args:  # help wins wherever it stands, even after a bad argument
        raise HelpRequested(format_help(defaults, prog, doc, source or os.path.join(root, prog)))
    config = copy.deepcopy(defaults)
    overrides = []
    i, bare_flag = 0, None
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            after = f" after --{bare_flag} (a True/False key: --{bare_flag}=False; alone it means True)" if bare_flag else ""
            raise ConfigError(f"unexpected argument {arg!r}{after}: use --key=value or --config FILE")
        key, has_value, value = arg[2:].partition("=")
        key, bare_flag = key.replace("-", "_"), None
        if not has_value:
            if key != "config" and key not in defaults:
                raise _unknown_key(key, defaults, f"--{key}")
            if key != "config" and isinstance(defaults[key], bool):
                # A bare --do_train means True, as HF users type it; the next argument is not its value.
                overrides.append((key, True))
                bare_flag = key
                i += 1
                continue
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"argument --{key} needs a value: --{key}=VALUE")
            value = args[i + 1]
            i += 1
        if key == "config":
            path = find_config_file(value, root)
            for k, (v, where) in read_config_file(path).items():
                config[k] = merge_value(config.get(k), check_override(defaults, k, v, where))
        else:
            overrides.append((key, value))
        i += 1
    # Command-line keys win over the config file wherever they stand.
    for key, value in overrides:
        if isinstance(value, str):
            value = parse_value(value, defaults.get(key), key)
        config[key] = merge_value(config.get(key), check_override(defaults, key, value, f"--{key}"))
    return config


def config_from_values(defaults, config=None, overrides=None, root=None):
    """The Python API's config: defaults <- `config` (a preset path, as --config takes, or a dict) <- `overrides`
    (keyword values), with the same checks as the command line: an unknown key, a wrong type or a bad value is
    a ConfigError naming it. Values are Python values here, never parsed from text."""
    merged = copy.deepcopy(defaults)
    if isinstance(config, (str, os.PathLike)):
        entries = read_config_file(find_config_file(os.fspath(config), root or PROJECT_ROOT))
    elif isinstance(config, dict):
        entries = {key: (value, "config") for key, value in config.items()}
    elif config is None:
        entries = {}
    else:
        raise ConfigError(f"config must be a preset path or a dict, got {type(config).__name__}")
    for key, (value, where) in entries.items():
        merged[key] = merge_value(merged.get(key), check_override(defaults, key, value, where))
    for key, value in (overrides or {}).items():
        merged[key] = merge_value(merged.get(key), check_override(defaults, key, value, f"run({key}=...)"))
    return merged
