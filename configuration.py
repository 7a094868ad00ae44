"""The run's configuration: one plain dict of defaults per trainer, overridden by --config FILE and
--key=value (nanoGPT's configurator, stricter), the --help text, and the checks every trainer's
validate_config runs before any work.

Values are Python literals checked against the type of their default; an unknown key or a wrong
type is a ConfigError naming the key, raised before any work starts. A dict given for a dict-valued
key (model_config) updates the default one level deep instead of replacing it. Every message is one
line: the entry point prints `error: <message>` and exits 2.

Imports: the standard library only (check_model_config is given the paddlenlp config class).
"""
import ast
import copy
import difflib
import io
import json
import math
import os
import re
import tokenize
from typing import Any, Dict, List


class ConfigError(ValueError):
    """A bad config key or value; raised before any work starts."""


def _closest_keys(key, keys):
    close = difflib.get_close_matches(key, list(keys), n=3, cutoff=0.5)
    return f"; closest valid keys: {', '.join(close)}" if close else ""


def _unknown_key(key, keys, source):
    return ConfigError(f"unknown config key {key!r} (from {source}){_closest_keys(key, keys)}")


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


# key -> (value, source) -> normalised value; each does its own type check (report_to takes a list too).
NORMALISERS = {"device": normalise_device, "report_to": normalise_report_to}


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


def parse_value(text, default):
    """A command-line value for a key with this default. A str key takes the text as typed unless it
    is a quoted string or a list: --wandb_run_name=2024 and --report_to=none stay strings."""
    value = parse_literal(text)
    if isinstance(default, str) and not isinstance(value, (str, list)):
        return text
    return value


# ----------------------------------------------------------------------------
# config files
# ----------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------
# --help, generated from the trainer's source so it cannot drift from CONFIG
# ----------------------------------------------------------------------------
SECTION_RE = re.compile(r"^#\s*---\s*(.+?)\s*---\s*$")
HELP_WIDTH = 100


def _dict_node_keys(node):
    """[(key, line)] of a `dict(key=...)` call or a `{"key": ...}` literal, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return [(kw.arg, kw.lineno) for kw in node.keywords if kw.arg]
    if isinstance(node, ast.Dict):
        return [(k.value, k.lineno) for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return None


def _comments_by_line(text):
    """{line: (comment text without '#', whole_line)}."""
    comments = {}
    lines = text.splitlines()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT:
                line, col = tok.start
                comments[line] = (tok.string, not lines[line - 1][:col].strip())
    except (tokenize.TokenError, SyntaxError):
        pass
    return comments


def config_comments(source_path, keys):
    """{key: (section, comment)} for the top-level dict in source_path that defines most of `keys`.

    The comment is the `# ...` beside the key, else the comment line(s) directly above it; the
    section is the last `# --- name ---` header above the key. Comments inside a multi-line value
    (model_config's inner keys) are skipped.
    """
    try:
        with open(source_path, encoding="utf-8") as f:
            text = f.read()
        tree = ast.parse(text)
    except (OSError, SyntaxError, ValueError):
        return {}
    best, wanted = None, set(keys)
    for node in tree.body:
        if isinstance(node, ast.Assign):
            found = _dict_node_keys(node.value)
            if found and (best is None or len(wanted & {k for k, _ in found}) > len(wanted & {k for k, _ in best[1]})):
                best = (node, found)
    if best is None:
        return {}
    node, found = best
    comments = _comments_by_line(text)
    headers = sorted((line, SECTION_RE.match(c).group(1)) for line, (c, whole) in comments.items()
                     if whole and SECTION_RE.match(c) and node.lineno <= line <= node.end_lineno)
    def plain_comment_line(n):  # a whole-line comment that is not a section header
        return n in comments and comments[n][1] and not SECTION_RE.match(comments[n][0])

    result = {}
    for key, line in found:
        if line in comments and not comments[line][1]:
            parts = [comments[line][0]]
        else:  # no comment beside the key: the comment lines directly above it (line_by_line in train_mlm.py)
            first = line
            while plain_comment_line(first - 1):
                first -= 1
            parts = [comments[n][0] for n in range(first, line)]
        section = next((name for header_line, name in reversed(headers) if header_line < line), "")
        result[key] = (section, " ".join(p.lstrip("#").strip() for p in parts))
    return result


def _wrap(words, width, indent):
    """Greedy line filling of pre-cut pieces (words of a comment, items of a dict)."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = indent + word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line] if line else lines


def compact_repr(value, first, width=HELP_WIDTH, indent=" " * 8):
    """`first` + repr(value) on as few lines as fit: a dict breaks between items, never inside one."""
    if isinstance(value, dict) and len(first) + len(repr(value)) > width:
        items = [f"{k!r}: {v!r}," for k, v in value.items()]
        items[0], items[-1] = "{" + items[0], items[-1][:-1] + "}"
        return _wrap([first + items[0]] + items[1:], width, indent)
    return [first + repr(value)]


def format_help(defaults, prog, doc, source=None):
    """Every key of `defaults` with its default, grouped under the CONFIG's section headers, each with
    the comment it has in `source` (the trainer's file)."""
    comments = config_comments(source, list(defaults)) if source else {}
    lines = [f"usage: python {prog} [--config FILE] [--key=value ...]", ""]
    if doc:  # the trainer's docstring, without its note for developers on what it imports
        lines += ["\n\n".join(p for p in doc.strip().split("\n\n") if not p.startswith("Imports:")), ""]
    lines += [
        "--config FILE   a .py or .json file (looked up in configs/ too) that sets some keys",
        "--key=value     a Python literal, checked against the type of the default",
        "--key           alone, for a True/False key: True (--do_train)",
        "a dict (model_config) given in part updates only the keys it names",
    ]
    sections: Dict[str, List[str]] = {}
    for key in defaults:
        sections.setdefault(comments.get(key, ("",))[0] or "keys", []).append(key)
    column = 38  # comments start here when the key and its default fit before it
    for section, keys in sections.items():
        lines += ["", f"{section}:"]
        for key in keys:
            comment = comments.get(key, ("", ""))[1]
            head = compact_repr(defaults[key], f"  --{key}=")
            if comment and len(head) == 1 and len(head[0]) < column - 1:
                text = _wrap(comment.split(), HELP_WIDTH - column, "")
                lines += [head[0].ljust(column) + text[0]] + [" " * column + t for t in text[1:]]
            else:
                lines += head
                if comment:
                    lines += [" " * 6 + t for t in _wrap(comment.split(), HELP_WIDTH - 6, "")]
    return "\n".join(lines)


# ----------------------------------------------------------------------------
# the command line
# ----------------------------------------------------------------------------
def parse_config(defaults, argv, prog="train.py", doc="", root=None, source=None):
    """Merge defaults <- --config FILE <- --key=value. Raises ConfigError; prints help and exits on --help.

    source: the file that defines the defaults (for --help's comments); default root/prog.
    """
    root = root or os.path.dirname(os.path.abspath(__file__))
    args = list(argv)
    if "-h" in args or "--help" in args:  # help wins wherever it stands, even after a bad argument
        print(format_help(defaults, prog, doc, source or os.path.join(root, prog)))
        raise SystemExit(0)
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
            for k, v in load_config_file(path).items():
                config[k] = merge_value(config.get(k), check_override(defaults, k, v, path))
        else:
            overrides.append((key, value))
        i += 1
    # Command-line keys win over the config file wherever they stand.
    for key, value in overrides:
        if isinstance(value, str):
            value = parse_value(value, defaults.get(key))
        config[key] = merge_value(config.get(key), check_override(defaults, key, value, f"--{key}"))
    return config


# ----------------------------------------------------------------------------
# range rules: {key: (rule, ...)}, each rule (value) -> what is wrong, or None
# ----------------------------------------------------------------------------
def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_rule(test, wording):
    """A rule for a number: `wording` (e.g. 'must be > 0') when test(value) is False."""
    def rule(value):
        if not _is_number(value):
            return "must be a number"
        return None if test(value) else wording
    rule.__name__ = wording
    return rule


positive = numeric_rule(lambda v: v > 0, "must be > 0")
non_negative = numeric_rule(lambda v: v >= 0, "must be >= 0")
finite = numeric_rule(math.isfinite, "must be finite")


def at_least(low):
    return numeric_rule(lambda v: v >= low, f"must be >= {low}")


def at_most(high):
    return numeric_rule(lambda v: v <= high, f"must be <= {high}")


def less_than(high):
    return numeric_rule(lambda v: v < high, f"must be < {high}")


def one_of(*choices):
    def rule(value):
        return None if value in choices else f"must be one of {', '.join(repr(c) for c in choices)}"
    return rule


def column_rule(value):
    """text_column, label_column, ...: None, a name, or a 0-based index ("2" on the command line is one too)."""
    if value is None or isinstance(value, str) and not re.fullmatch(r"\s*-[0-9]+\s*", value):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return "must be a column name or a 0-based column index"
    if int(value) < 0:
        return ("must be a column name or a 0-based column index: negative indexes are not supported "
                "(-1 would quietly mean the last column); count from 0 at the left")
    return None


def check_rules(cfg, rules):
    """The first broken rule is a ConfigError naming the key and its value."""
    for key, key_rules in rules.items():
        for rule in key_rules:
            problem = rule(cfg[key])
            if problem:
                raise ConfigError(f"{key} {problem}, got {cfg[key]!r}")


def training_rules(cfg):
    """The rules every trainer's CONFIG shares; its validate_config adds its own keys."""
    rules = {
        "seed": (at_least(0),),  # numpy seeds must be >= 0
        "learning_rate": (finite, positive),  # --learning_rate=1e400 trained with lr=inf and exited 0
        "warmup_steps": (non_negative,),
        "warmup_proportion": (finite, non_negative, at_most(1)),
        "adam_epsilon": (finite, non_negative),
        "weight_decay": (finite, non_negative),
        "max_grad_norm": (finite, non_negative),  # 0 = no clipping
        "scale_loss": (finite, positive),
        "amp_dtype": (one_of("float16", "bfloat16"),),
        "train_batch_size": (positive,),
        "eval_batch_size": (positive,),
        "gradient_accumulation_steps": (at_least(1),),
        "logging_steps": (positive,),
        "eval_steps": (non_negative,),  # 0 = same as save_steps
        "save_steps": (positive,),
        "save_total_limit": (non_negative,),  # 0 = keep all
        "max_train_samples": (non_negative,),
        "max_eval_samples": (non_negative,),
        "early_stopping_patience": (non_negative,),
        "early_stopping_threshold": (finite, non_negative),
    }
    rules.update({key: (column_rule,) for key in cfg if key.endswith("_column")})  # text_column, label_column, ...
    if cfg["max_steps"] <= 0:  # epochs decide the length: 0 epochs exited 0 without a checkpoint
        rules["num_train_epochs"] = (numeric_rule(lambda v: v >= 1, f"must be >= 1 when max_steps <= 0 (max_steps={cfg['max_steps']})"),)
    return rules


# ----------------------------------------------------------------------------
# metrics, data and model checks for validate_config
# ----------------------------------------------------------------------------
LOWER_IS_BETTER = ("loss", "perplexity")


def resolve_greater_is_better(metric, value):
    """greater_is_better as set, or inferred from the metric's name: loss and perplexity are lower-is-better."""
    if value is None:
        return metric not in LOWER_IS_BETTER
    if isinstance(value, bool):
        return value
    raise ConfigError(f"greater_is_better must be True, False or None (inferred from metric_for_best), got {value!r}")


def model_config_fields(config_class):
    """{field: default} a paddlenlp config class accepts, and its attribute_map {alias: field}.

    PretrainedConfig.__init__ keeps any unknown keyword as an attribute, so a typo never fails there;
    the fields are the instance's to_dict() keys (the class's own and PretrainedConfig's common ones)."""
    instance = config_class()
    fields = {k: v for k, v in instance.to_dict().items() if not k.startswith("_")}
    return fields, dict(getattr(config_class, "attribute_map", {}) or {})


def _type_matches(value, default):
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return _is_number(value)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return type(value) is type(default)


def check_model_config(model_config, config_class, head_pairs=()):
    """Check model_config against a paddlenlp config class (BartConfig, BertConfig, GPTConfig, ...).

    An unknown key names the closest fields; a value of another type than the class default's is an
    error; head_pairs [(size, heads), ...] must divide (d_model by encoder_attention_heads, ...).
    Returns {field: value}: the class defaults with model_config over them (aliases resolved).
    """
    if not isinstance(model_config, dict):
        raise ConfigError(f"model_config must be a dict, got {type(model_config).__name__} {model_config!r}")
    fields, aliases = model_config_fields(config_class)
    effective = dict(fields)
    for key, value in model_config.items():
        field = aliases.get(key, key)
        if field not in fields:
            close = difflib.get_close_matches(str(key), list(fields) + list(aliases), n=3, cutoff=0.5)
            hint = f"; closest valid keys: {', '.join(close)}" if close else ""
            raise ConfigError(f"model_config: unknown key {key!r} for {config_class.__name__}{hint}")
        if not _type_matches(value, fields[field]):
            raise ConfigError(
                f"model_config[{key!r}] must be {type(fields[field]).__name__} like {config_class.__name__}'s "
                f"default {fields[field]!r}, got {type(value).__name__} {value!r}"
            )
        effective[field] = value
    for size_key, heads_key in head_pairs:
        size, heads = effective[aliases.get(size_key, size_key)], effective[aliases.get(heads_key, heads_key)]
        if not (_is_number(heads) and heads > 0):
            raise ConfigError(f"model_config[{heads_key!r}] must be > 0, got {heads!r}")
        if size % heads:
            raise ConfigError(
                f"model_config[{size_key!r}]={size} must be divisible by model_config[{heads_key!r}]={heads} "
                "(each attention head gets an equal share)"
            )
    return effective


def check_max_lengths(lengths, max_positions, where):
    """Each {key: length} must fit the model's max_position_embeddings (positions past it have no embedding).

    where: which model, for the message (e.g. "pretrained_model 'bart-base'" or "model_config").
    """
    for key, length in lengths.items():
        if length > max_positions:
            raise ConfigError(f"{key}={length} exceeds the model's max_position_embeddings={max_positions} ({where})")
