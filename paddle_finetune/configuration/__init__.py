"""The run's configuration: one plain dict of defaults per trainer, overridden by --config FILE and
--key=value (nanoGPT's configurator, stricter), the --help text, and the checks every trainer's
validate_config runs before any work.

Values are Python literals checked against the type of their default; an unknown key or a wrong
type is a ConfigError naming the key, raised before any work starts. A dict given for a dict-valued
key (model_config) updates the default one level deep instead of replacing it. Every message is one
line: the entry point prints `error: <message>` and exits 2.

Four modules, because they change for different reasons: `parse` (reading argv, merging), `files` (the
.yaml/.py/.json config files, with the line of each key where the format tells it), `help` (the --help text
generated from a trainer's source) and `rules` (the range checks).

Imports: the standard library; PyYAML inside configuration.files (check_model_config is given the paddlenlp
config class).
"""
from paddle_finetune.configuration.files import read_config_file  # noqa: F401
from paddle_finetune.configuration.help import format_help  # noqa: F401
from paddle_finetune.configuration.parse import (  # noqa: F401
    check_override,
    find_config_file,
    load_config_file,
    merge_value,
    normalise_device,
    normalise_report_to,
    parse_config,
    parse_literal,
    parse_report_to,
    parse_value,
)
from paddle_finetune.configuration.rules import (  # noqa: F401
    LOWER_IS_BETTER,
    at_least,
    at_most,
    check_max_lengths,
    check_model_config,
    check_rules,
    column_rule,
    less_than,
    model_config_fields,
    non_negative,
    numeric_rule,
    one_of,
    positive,
    resolve_greater_is_better,
    training_rules,
)
from paddle_finetune.errors import ConfigError  # noqa: F401
