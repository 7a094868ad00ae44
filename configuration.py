"""The run's configuration: one plain dict of defaults per trainer, overridden by --config FILE and
--key=value (nanoGPT's configurator, stricter), and the --help text.

Values are Python literals checked against the type of their default; an unknown key or a wrong
type is a ConfigError naming the key, raised before any work starts.

Imports: the standard library only.
"""
import ast
import difflib
import json
import os
from typing import Any, Dict


class ConfigError(ValueError):
    """A bad config key or value; raised before any work starts."""


def _closest_keys(key, keys):
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    return f"; closest valid keys: {', '.join(close)}" if close else ""


def check_override(defaults, key, value, source):
    """Type-check one override against its default (nanoGPT's configurator rules, stricter)."""
    if key not in defaults:
        raise ConfigError(f"unknown config key {key!r} (from {source}){_closest_keys(key, list(defaults))}")
    default = defaults[key]
    if default is None or value is None:
        return value
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


def parse_literal(text):
    """--key=value values are Python literals; bare words stay strings, true/false are forgiven."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def find_config_file(path, root):
    for candidate in (path, os.path.join(root, path), os.path.join(root, "configs", path)):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config file not found: {path} (looked in ., {root} and {os.path.join(root, 'configs')})")


def load_config_file(path):
    """A .json object, or a .py file whose top-level UPPER/lower names are config keys."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            try:
                values = json.load(f)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{e.lineno}: malformed JSON config ({e.msg})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a JSON config must be an object of key: value")
        # JSON has no comments: keys starting with "_" (e.g. "_comment") are notes, not settings.
        return {k: v for k, v in values.items() if not k.startswith("_")}
    if path.endswith(".py"):
        scope: Dict[str, Any] = {}
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), scope)  # noqa: S102 - config files are the user's own code
        return {k: v for k, v in scope.items() if not k.startswith("_") and not callable(v) and not isinstance(v, type(os))}
    raise ConfigError(f"config file {path} must end in .py or .json")


def format_help(defaults, prog, doc):
    lines = [f"usage: python {prog} [--config FILE] [--key=value ...]", ""]
    if doc:
        lines += [doc.strip(), ""]
    lines += [
        "--config FILE   a .py or .json file (looked up in configs/ too) that sets some keys",
        "--key=value     a Python literal, checked against the type of the default",
        "",
        "keys and defaults:",
    ]
    width = max(len(k) for k in defaults)
    lines += [f"  --{k:<{width}} = {v!r}" for k, v in defaults.items()]
    return "\n".join(lines)


def parse_config(defaults, argv, prog="train.py", doc="", root=None):
    """Merge defaults <- --config FILE <- --key=value. Raises ConfigError; prints help and exits on --help."""
    root = root or os.path.dirname(os.path.abspath(__file__))
    config = dict(defaults)
    overrides = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            print(format_help(defaults, prog, doc))
            raise SystemExit(0)
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: use --key=value or --config FILE")
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"argument --{key} needs a value: --{key}=VALUE")
            value = args[i + 1]
            i += 1
        key = key.replace("-", "_")
        if key == "config":
            path = find_config_file(value, root)
            for k, v in load_config_file(path).items():
                config[k] = check_override(defaults, k, v, path)
        else:
            overrides.append((key, value))
        i += 1
    # Command-line keys win over the config file wherever they stand.
    for key, value in overrides:
        config[key] = check_override(defaults, key, parse_literal(value), f"--{key}")
    return config
