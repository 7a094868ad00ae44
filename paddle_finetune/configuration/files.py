"""Config files (--config FILE, and the Python API's run("x.yaml")): .yaml/.yml, .py and .json presets, found in
the working directory, the project or its configs/, and read into {key: (value, where)}. `where` is "file:line"
when the format tells the line (YAML's marks, a .py file's assignment), else the file, so that a bad key or value
names the line it is on.

In every format a key starting with "_" is a note, not a setting (JSON has no comments; the .py file's private
names). A key set twice in a YAML or JSON file is an error (both parsers would keep the last one silently).

YAML is read as PyYAML's safe YAML 1.1 with two exceptions, both so that a value means what it means in the .py and
.json presets and on the command line: 5e-5 is a float (YAML 1.1 wants 5.0e-5 and reads 5e-5 as a string), and
None is null like null and ~.

Imports: the standard library; PyYAML inside the functions; of the project `errors`.
"""
import ast
import json
import os
import re
from typing import Any, Dict, Tuple

from paddle_finetune.errors import ConfigError

YAML_SUFFIXES = (".yaml", ".yml")
CONFIG_SUFFIXES = YAML_SUFFIXES + (".py", ".json")


def find_config_file(path, root):
    for candidate in (path, os.path.join(root, path), os.path.join(root, "configs", path)):
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"config file not found: {path} (looked in ., {root} and {os.path.join(root, 'configs')})")


def read_config_file(path) -> Dict[str, Tuple[Any, str]]:
    """{key: (value, where)} of a config file (see the module docstring)."""
    lower = path.lower()
    if lower.endswith(YAML_SUFFIXES):
        entries = _read_yaml(path)
    elif lower.endswith(".json"):
        entries = _read_json(path)
    elif lower.endswith(".py"):
        entries = _read_python(path)
    else:
        raise ConfigError(f"config file {path} must end in {', '.join(CONFIG_SUFFIXES[:-1])} or {CONFIG_SUFFIXES[-1]}")
    return {k: v for k, v in entries.items() if not (isinstance(k, str) and k.startswith("_"))}


def load_config_file(path):
    """{key: value} of a config file."""
    return {key: value for key, (value, _) in read_config_file(path).items()}


# ----------------------------------------------------------------------------
# JSON and Python
# ----------------------------------------------------------------------------
def _read_json(path):
    def no_repeats(pairs):
        seen = {}
        for key, value in pairs:
            if key in seen:
                raise ConfigError(f"{path}: key {key!r} is set twice")
            seen[key] = value
        return seen

    with open(path, encoding="utf-8") as f:
        try:
            values = json.load(f, object_pairs_hook=no_repeats)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: malformed JSON config ({e.msg})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a JSON config must be an object of key: value")
    return {k: (v, path) for k, v in values.items()}


def _read_python(path):
    """A .py file's top-level names that are not modules, functions or classes; each where its last assignment is.
    The file is run as Python: presets are the user's own, trusted files (README, --help)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    scope: Dict[str, Any] = {}
    exec(compile(text, path, "exec"), scope)  # noqa: S102 - config files are the user's own code
    lines = {}
    for node in ast.parse(text).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            if isinstance(target, ast.Name):
                lines[target.id] = node.lineno
    return {k: (v, f"{path}:{lines[k]}" if k in lines else path) for k, v in scope.items()
            if not k.startswith("__") and not callable(v) and not isinstance(v, type(os))}


# ----------------------------------------------------------------------------
# YAML
# ----------------------------------------------------------------------------
# Floats YAML 1.1 leaves as strings: an exponent without a dot (5e-5, 1E3).
_EXPONENT_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


def _yaml_loader():
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        """PyYAML's SafeLoader with 5e-5 a float and None null (see the module docstring)."""

    # add_implicit_resolver copies the inherited table on a subclass: SafeLoader itself is left as it is.
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789"))
    ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^None$"), ["N"])
    return ConfigLoader


def _check_mappings(node, path):
    """Every mapping in the document: keys set once (PyYAML keeps the last silently)."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        first = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in first:
                    raise ConfigError(f"{path}:{key.start_mark.line + 1}: key {key.value!r} is set twice "
                                      f"(first on line {first[key.value]})")
                first[key.value] = key.start_mark.line + 1
            _check_mappings(value, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_mappings(item, path)


def _read_yaml(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        text = f.read()
    loader = _yaml_loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:  # empty, or comments only: sets nothing
            return {}
        if not isinstance(node, yaml.MappingNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else f"single value {node.value!r}"
            raise ConfigError(f"{path}:{node.start_mark.line + 1}: a YAML config must be a mapping of key: value, "
                              f"got a {kind}")
        _check_mappings(node, path)
        loader.flatten_mapping(node)  # `<<: *defaults` merge keys, the explicit keys after (and over) them
        entries = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            where = f"{path}:{key_node.start_mark.line + 1}"
            if not isinstance(key, str):
                raise ConfigError(f"{where}: config keys are names, got {key!r}")
            entries[key] = (loader.construct_object(value_node, deep=True), where)
        return entries
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        column = f" (column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}{line}: malformed YAML config: {e.problem or e.context}{column}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: malformed YAML config: {e}") from None
    finally:
        loader.dispose()
