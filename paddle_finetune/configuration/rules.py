"""Range rules for config values ({key: (rule, ...)}, each rule (value) -> what is wrong, or None), the rules
every trainer shares, and the checks of a model_config against its paddlenlp config class.

Imports: the standard library; of the project `errors`.
"""
import difflib
import math
import re

from paddle_finetune.errors import ConfigError


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
        "seed": (at_least(0), at_most(2**32 - 1)),  # numpy seeds are 32-bit: 4294967296 failed deep inside numpy
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
