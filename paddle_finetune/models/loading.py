"""What a run starts from: a pretrained model (a paddlenlp name, a local Paddle directory, a checkpoint or
an output_dir, or a local Hugging Face directory converted once and cached) or a fresh model built from
model_config; its tokenizer (or a character vocab built from the training texts); and its position limit.
Also the trained model a prediction tool loads.

Imports: the standard library and numpy; paddle and paddlenlp inside; of the project `errors`,
`configuration`, `checkpoints`, `conversion`, `data.text`, `models.weights`, `reporting`, `runtime`,
`speedups`.
"""
import os

import numpy as np

from paddle_finetune.checkpoints.files import TRAIN_CONFIG_FILE, _one_line, read_json_file, read_json_object
from paddle_finetune.checkpoints.listing import latest_checkpoint, resolve_model_dir
from paddle_finetune.configuration.rules import check_max_lengths
from paddle_finetune.conversion import (
    ensure_paddle_checkpoint,
    has_tokenizer,
    is_hf_checkpoint_dir,
    no_tokenizer_message,
)
from paddle_finetune.data.text import write_char_vocab
from paddle_finetune.errors import CheckpointError, ConfigError, ConversionError
from paddle_finetune.models.weights import load_model_dir, unwrap_model
from paddle_finetune.reporting.console import log
from paddle_finetune.runtime.distributed import barrier, is_main_process
from paddle_finetune.runtime.environment import setup_device, staging_dir
from paddle_finetune import speedups


# ----------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------
def looks_like_path(name):
    return name.startswith((".", "/", "~")) or os.sep in name or os.path.exists(name)


MODEL_CONFIG_FILES = ("config.json", "model_config.json")  # paddlenlp/HF, older paddlenlp


def _is_output_dir(path):
    return bool(latest_checkpoint(path)) or os.path.isfile(os.path.join(path, "trainer_state.json"))


def check_pretrained_dir(name_or_path):
    """A pretrained_model that looks like a path must be a model directory (a config file), a checkpoint
    or an output_dir; a name is left to paddlenlp."""
    if not looks_like_path(name_or_path):
        return
    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
        raise ConfigError(f"pretrained_model directory not found: {name_or_path}")
    if not any(os.path.isfile(os.path.join(path, n)) for n in MODEL_CONFIG_FILES) and not _is_output_dir(path):
        shown = name_or_path if os.path.abspath(path) == path else f"{name_or_path} ({os.path.abspath(path)})"
        raise ConfigError(f"pretrained_model {shown} is not a model directory: it has no "
                          "config.json; give a paddlenlp model name, a Paddle or Hugging Face model directory, "
                          "a checkpoint-<step> directory or an output_dir")


class _TrainerReportsMissingTokenizer:
    """The converter warns when a source has no tokenizer; a trainer stops with that message as its error
    (load_tokenizer), so the warning would say it twice."""

    @staticmethod
    def filter(record):
        return "has no tokenizer files" not in record.getMessage()


def _convert_hf_dir(path, cache_dir):
    import logging

    logger = logging.getLogger("paddle_finetune.conversion")
    logger.addFilter(_TrainerReportsMissingTokenizer)
    try:
        return ensure_paddle_checkpoint(path, cache_dir)
    except ConversionError as e:
        raise ConfigError(f"pretrained_model {path} cannot be converted from Hugging Face format: {e}") from None
    finally:
        logger.removeFilter(_TrainerReportsMissingTokenizer)


def resolve_pretrained(name_or_path, cache_dir=None):
    """A paddlenlp name, a local Paddle directory, or a local HF directory (converted once, cached)."""
    if not looks_like_path(name_or_path):
        return name_or_path
    check_pretrained_dir(name_or_path)
    path = os.path.expanduser(name_or_path)
    if not os.path.isfile(os.path.join(path, "config.json")) and _is_output_dir(path):
        path = resolve_model_dir(path)  # an output_dir: its final model, else its best checkpoint
    if is_hf_checkpoint_dir(path):
        # Rank 0 converts; the others wait and then find the finished conversion in the cache.
        if is_main_process():
            _convert_hf_dir(path, cache_dir)
        barrier()
        return _convert_hf_dir(path, cache_dir)
    return path


def usable_positions(model):
    """The longest input the loaded model has position embeddings for (None when its config does not say).
    RoBERTa counts positions from pad_token_id + 1, so its last pad_token_id + 1 rows are never reachable."""
    inner = unwrap_model(model)
    limit = getattr(inner.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit <= 0:
        return None
    # By class name for a dygraph model, by model_type for an exported one (inference.predictor).
    if "roberta" in type(inner).__name__.lower() or getattr(inner.config, "model_type", None) == "roberta":
        limit -= (getattr(inner.config, "pad_token_id", 0) or 0) + 1
    return limit


def load_model(model_class, config, fit_lengths=(), **model_kwargs):
    """From pretrained_model when set, else a fresh model built from model_config.

    A local directory is loaded without unpickling (checkpoints.load_model_dir: safetensors, or numpy arrays only)
    and its weights must match the model, but for a new task head; a name goes through paddlenlp's from_pretrained.
    fit_lengths: config keys (max_source_length, block_size, ...) that must fit the pretrained model's positions.
    """
    if config.get("pretrained_model"):
        path = resolve_pretrained(config["pretrained_model"], config.get("converted_model_dir") or None)
        log(f"loading {model_class.__name__} from {path}")
        if os.path.isdir(path):
            model = load_model_dir(model_class, path, allow_new_head=True, **model_kwargs)
        else:
            try:
                model = model_class.from_pretrained(path, **model_kwargs)
            except Exception as e:  # noqa: BLE001 - paddlenlp raises many types for a bad name
                raise ConfigError(f"could not load pretrained_model {config['pretrained_model']!r}: {type(e).__name__}: {e}") from e
        # A pretrained model's limit is known only now, still before output_dir opens: past it, training stopped at
        # the first batch with paddle's embedding index error.
        positions = usable_positions(model)
        if positions:
            check_max_lengths({key: config[key] for key in fit_lengths}, positions, f"pretrained_model {config['pretrained_model']!r}")
        return model
    if not config.get("model_config"):
        raise ConfigError("set pretrained_model (a name or directory) or model_config (a dict) to build a model")
    model_config = model_class.config_class(**{**config["model_config"], **model_kwargs})
    log(f"building {model_class.__name__} from model_config (no pretrained weights)")
    return model_class(model_config)

def load_tokenizer(config, texts):
    """(tokenizer, staged files): the pretrained model's tokenizer, or a character vocab built from the training texts.

    The vocab goes to a staging dir, and into output_dir only once every check has passed (copy_staged_files).
    Every rank builds it from the same texts, so no rank waits for another or needs a shared disk (write_char_vocab
    is deterministic; that every node read the same texts is checked on the tokenized data, see agree_on_data).
    """
    from paddlenlp.transformers import BertTokenizer

    if config["pretrained_model"]:
        path = resolve_pretrained(config["pretrained_model"], config.get("converted_model_dir") or None)
        if os.path.isdir(path):
            if not has_tokenizer(path):
                raise ConfigError(f"pretrained_model {config['pretrained_model']}: " + no_tokenizer_message(path))
        return load_tokenizer_from(path, f"pretrained_model {config['pretrained_model']}"), {}
    vocab = write_char_vocab(texts, os.path.join(staging_dir(), "vocab.txt"))
    return BertTokenizer(vocab_file=vocab), {"vocab.txt": vocab}


def load_tokenizer_from(path, what):
    """paddlenlp's AutoTokenizer for a name or directory; one ConfigError line when it cannot load it (e.g. a
    tokenizer_config.json naming a class paddlenlp has not, such as HF's PreTrainedTokenizerFast)."""
    from paddlenlp.transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - paddlenlp raises many types for a tokenizer it cannot build
        named = ""
        config_file = os.path.join(path, "tokenizer_config.json")
        if os.path.isdir(path) and os.path.isfile(config_file):
            try:
                cls = read_json_file(config_file, max_bytes=16 << 20).get("tokenizer_class")
                named = f" (its tokenizer_config.json names {cls})" if isinstance(cls, str) else ""
            except (CheckpointError, AttributeError):
                pass
        raise ConfigError(f"{what}: paddlenlp cannot load its tokenizer{named}: {_one_line(e)}; convert it with "
                          "tools/convert_hf_to_paddle.py, or give a paddlenlp tokenizer (vocab.txt, or vocab.json + "
                          "merges.txt, with a paddlenlp tokenizer_config.json)") from None


def vocab_size(tokenizer):
    return len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else tokenizer.vocab_size


def tokenizer_entries(tokenizer):
    """How many ids the tokenizer can produce: its vocabulary with added tokens."""
    try:
        return len(tokenizer)
    except TypeError:
        return vocab_size(tokenizer)


def check_tokenizer_fits(tokenizer, model, where):
    """Every id the tokenizer can produce must have a row in the model's input embedding; refused (ConfigError)
    before output_dir opens, where it used to crash at the first step with paddle's embedding error."""
    if tokenizer is None:
        return
    inner = unwrap_model(model)
    try:
        rows = int(inner.get_input_embeddings().weight.shape[0])
    except (AttributeError, NotImplementedError, TypeError):
        rows = getattr(getattr(inner, "config", None), "vocab_size", None)
    entries = tokenizer_entries(tokenizer)
    if isinstance(rows, int) and entries > rows:
        raise ConfigError(f"{where}: its tokenizer has {entries} entries, more than the model's {rows} embeddings "
                          f"(vocab_size): ids from {rows} on have no embedding; use the tokenizer the model was trained "
                          "with")


def count_parameters(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def load_trained(path, model_class, device="auto", defaults=None):
    """For prediction CLIs: (model_dir, model in eval mode, tokenizer, the training config it was saved
    with over `defaults`). `path` may be an output_dir (see resolve_model_dir)."""
    model_dir = resolve_model_dir(path)
    config = dict(defaults or {})
    config_file = os.path.join(model_dir, TRAIN_CONFIG_FILE)
    if os.path.lexists(config_file):
        config.update(read_json_object(config_file, "a training config"))
    fast_kernels = bool(config.get("fast_kernels", True))
    setup_device(device, fast_kernels=fast_kernels)
    tokenizer = load_tokenizer_from(model_dir, f"model {model_dir}")
    model = load_model_dir(model_class, model_dir)
    check_tokenizer_fits(tokenizer, model, f"model {model_dir}")
    model.eval()
    if fast_kernels:  # the layers the run evaluated with, so a prediction gives the numbers its evaluation gave
        speedups.use_fast_cpu_kernels(model)
    return model_dir, model, tokenizer, config
