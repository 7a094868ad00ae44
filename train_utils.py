"""The engine every trainer runs on: the entry point, device placement, model and tokenizer loading,
the optimizer and warmup schedule, AMP and loss scaling, and the training loop.

A trainer (train.py, train_classification.py, ...) builds a TrainingTask (model, features, collate,
loss and evaluate functions) and calls run_training(task). The loop reads top to bottom:
lr -> maybe eval/save -> forward under auto_cast -> scaled backward -> clip -> step -> clear -> log -> stop check.

Its neighbours, one concern each: configuration (CONFIG, overrides, --help), checkpoints (save, load,
rotate, output_dir), batching (batch order), reporting (log, wandb, result files), distributed
(ranks, barrier, the TCP store), multinode (who writes which node's output_dir; ranks agreeing on data and
resume), rng (seeds and RNG state), speedups (every speed patch, behind fast_kernels) and hf_to_paddle (the HF
checkpoint converter). This module imports them; none of them imports it.
"""
import contextlib
import dataclasses
import importlib
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np

import speedups
from batching import batch_rng, epoch_batches, to_tensors
from checkpoints import (
    CHECKPOINT_PREFIX,
    unwrap_model,
    apply_model_weights,
    check_max_steps,
    check_resume_compatible,
    claimed_output_dir,
    data_fingerprint,
    load_model_dir,
    read_model_weights,
    write_run_state,
    TRAIN_CONFIG_FILE,
    check_output_dir,
    latest_checkpoint,
    load_checkpoint,
    load_rank_rng,
    open_output_dir,
    resolve_model_dir,
    resolve_resume,
    rotate_checkpoints,
    save_checkpoint,
    save_model_files,
)
from configuration import ConfigError, check_max_lengths, parse_config, resolve_greater_is_better
from distributed import (all_gather, barrier, broadcast_flag, broadcast_from_main, get_local_world_size, get_rank, get_world_size,
                         init_distributed, is_main_process, mean_across_ranks, writes_output)
from multinode import agree_on_data, agree_on_resume, check_output_dir_sharing
from reporting import (
    append_jsonl,
    describe_config,
    error,
    log,
    open_reporting,
    plot_training_curves,
    progress_bar,
    quiet_libraries,
    summary_lines,
    truncate_jsonl,
    warn_once,
    write_results,
)
from rng import get_rng_state, paddle_cpu_rng_checkpoints, reseed_paddle_cpu, rng_state_to_json, set_rng_state, set_seed

# OMP_NUM_THREADS as the user launched us: paddle's import sets it to 1 when it is unset, so the entry
# point records it before anything imports paddle (see run_main and cpu_threads).
_launch_env = {}


def record_launch_env():
    """What must happen before paddle is imported: remember the user's OMP_NUM_THREADS while it is still theirs
    (importing paddle sets it to 1 when unset), and load Python's zlib first, because paddle 2.6.2 exports zlib
    symbols of its own and a zlib loaded after it fails with "inconsistent stream state"."""
    if "paddle" not in sys.modules:
        importlib.import_module("zlib")
        _launch_env.setdefault("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS"))


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. NaN loss in fp32); the last good checkpoint is kept."""


def run_main(main, defaults, prog, doc=""):
    """Entry-point wrapper: config errors and data errors exit non-zero with one clear line."""
    from data_utils import DataError

    record_launch_env()
    quiet_libraries()  # before paddle's import, so its import-time warnings are routed too
    try:
        config = parse_config(defaults, sys.argv[1:], prog=prog, doc=doc)
        # One run per output_dir, for the whole run; a run refused before open_output_dir leaves it as it was.
        with claimed_output_dir(config):
            return main(config)
    except (ConfigError, DataError, TrainingError) as e:
        error(str(e))
        raise SystemExit(2) from None


def start_run(config):
    """Every trainer's first steps, before any data is read: refuse a used output_dir, pick the device, find out
    whether the ranks share output_dir (multinode.py), seed."""
    if not config.get("do_train", True) and not config.get("pretrained_model"):
        raise ConfigError("do_train=False evaluates pretrained_model: set it to a model directory, a checkpoint or an output_dir")
    if is_main_process():  # other ranks may see another disk: their node's writer checks its own copy when it claims it
        check_output_dir(config)
    if config.get("pretrained_model"):  # a path that is no model is found before any data is read
        check_pretrained_dir(config["pretrained_model"])
    device = setup_device(config["device"], fast_kernels=config.get("fast_kernels", True))
    init_distributed()
    check_output_dir_sharing(config)
    set_seed(config["seed"], get_rank())
    describe_config(config)
    return device


# ----------------------------------------------------------------------------
# device and AMP
# ----------------------------------------------------------------------------
def setup_device(device, fast_kernels=True):
    """'gpu', 'cpu' or 'auto'; a GPU request on a build without CUDA is an error, not a silent fallback."""
    record_launch_env()
    import paddle

    if device not in ("auto", "gpu", "cpu"):
        raise ConfigError(f"device must be 'auto', 'gpu' or 'cpu', got {device!r}")
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if device == "gpu" and not has_gpu:
        raise ConfigError(
            "device='gpu' but this paddle build has no usable CUDA GPU "
            f"(paddle {paddle.__version__}, compiled with CUDA: {paddle.is_compiled_with_cuda()}); "
            "install paddlepaddle-gpu (see README) or run with --device=cpu"
        )
    chosen = "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"
    if chosen == "gpu":
        # The launcher gives each process its own card through FLAGS_selected_gpus.
        paddle.set_device(f"gpu:{os.environ.get('FLAGS_selected_gpus', '0').split(',')[0]}")
    else:
        paddle.set_device("cpu")
        reproducible_cpu_math()
        if fast_kernels:  # before the first matrix multiply: MKL reads its CPU type then
            speedups.setup_cpu_process()
        paddle.base.core.set_num_threads(cpu_threads())
    return chosen


# MKL's strict conditional numerical reproducibility: sgemm results that do not depend on the number of threads.
MKL_CNR = "AUTO,STRICT"


def reproducible_cpu_math():
    """Matrix products whose bits do not depend on the thread count (MKL_CBWR, unless the user set it), so one
    process with every core as threads evaluates exactly as ranks with a share each (evaluation.py).

    Without it, paddle's bundled MKL splits some products differently by thread count: measured on an AMD EPYC,
    12 of 300 random [m, k] x [k, n] float32 shapes (all with k=1024, n up to 23k: a big model's LM head) differed
    by ~1e-5 between 1 and 2 threads, enough to flip a near-tie in greedy generation; with it, none did, at no
    measurable cost. MKL reads it at its first call, so this runs before any matrix multiply. It does not cover
    MKL's generic path on AMD CPUs (fast_kernels=False): there, products with n >= ~3000 still differ.
    """
    os.environ.setdefault("MKL_CBWR", MKL_CNR)


def cpu_threads():
    """Math threads per process on CPU: OMP_NUM_THREADS when the user set it, else this rank's share of the cores.

    Paddle defaults to 1 thread: its import sets OMP_NUM_THREADS=1 when it is unset, which leaves the other cores
    idle. The entry points record the user's value before that (record_launch_env). When paddle was imported
    first (a notebook, a script of the user's, tools/benchmark.py), a 1 in the environment cannot be told from
    paddle's own default, so it is taken as the default: all cores. A user who wants fewer sets 2 or more, or
    launches through an entry point, where their 1 is kept.
    """
    if "OMP_NUM_THREADS" in _launch_env:
        user = _launch_env["OMP_NUM_THREADS"]
    else:
        user = os.environ.get("OMP_NUM_THREADS")
        if user == "1":
            user = None  # as likely paddle's import as the user's: see above
    if user == "1" and "PADDLE_TRAINER_ID" in os.environ:
        user = None  # what paddle.distributed.launch's own paddle import exported to its ranks, not the user's choice
    if user and user.isdigit() and int(user) > 0:
        return int(user)
    return max(1, (os.cpu_count() or 1) // max(1, get_local_world_size()))


def resolve_amp(config, device):
    """(use_amp, amp_dtype). AMP is a GPU feature: on CPU paddle.amp.auto_cast is a no-op, so say so once and run fp32."""
    dtype = config.get("amp_dtype", "float16")
    if dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"amp_dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    if config.get("use_amp") and device != "gpu":
        warn_once("use_amp=True ignored: AMP needs a GPU (paddle.amp.auto_cast does nothing on CPU); training in fp32")
        return False, dtype
    return bool(config.get("use_amp")), dtype


# float16 AMP: GradScaler skips a step whose gradients hold inf/NaN and lowers the loss scale. BART is known to
# overflow in fp16; a run whose every step is skipped would "train" for hours and save the initial weights.
AMP_MAX_SKIPPED_STEPS = 50


def amp_step_skipped(scaler):
    """Whether GradScaler skipped the step it just took (inf/NaN gradients). Always False when it is off (CPU, bf16)."""
    if not scaler.is_enable():
        return False
    found = getattr(scaler, "_cache_found_inf", None)  # set by GradScaler.step in paddle 2.6 and 3.x
    return bool(found) if found is not None else False


def loss_scale(scaler):
    return float(scaler.state_dict()["scale"]) if scaler.is_enable() else None


def skipped_in_a_row(count, skipped):
    return count + 1 if skipped else 0


def amp_stop_reason(in_a_row, scale, max_skipped=AMP_MAX_SKIPPED_STEPS):
    """None while float16 training can go on, else why it cannot."""
    if in_a_row >= max_skipped:
        return f"GradScaler skipped the last {in_a_row} steps (inf/NaN gradients in float16)"
    if scale is not None and scale < 1.0:
        return f"the float16 loss scale fell to {scale:g}, below 1"
    return None


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

    from hf_to_paddle import ConversionError, ensure_paddle_checkpoint

    logger = logging.getLogger("hf_to_paddle")
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
    from hf_to_paddle import is_hf_checkpoint_dir

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
    if "roberta" in type(inner).__name__.lower():
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


def staging_dir():
    """A temp dir for files a run makes before output_dir may change (e.g. a vocab built from the data); removed at exit."""
    if "staging" not in _launch_env:
        import atexit
        import tempfile

        _launch_env["staging"] = tempfile.mkdtemp(prefix="paddle-finetune-")
        atexit.register(shutil.rmtree, _launch_env["staging"], True)
    return _launch_env["staging"]


def copy_staged_files(staged, output_dir):
    """Staged files into output_dir (copies: a tokenizer keeps reading its vocab from where it was made)."""
    if writes_output():
        for name, path in (staged or {}).items():
            shutil.copyfile(path, os.path.join(output_dir, name))


def load_tokenizer(config, texts):
    """(tokenizer, staged files): the pretrained model's tokenizer, or a character vocab built from the training texts.

    The vocab goes to a staging dir, and into output_dir only once every check has passed (copy_staged_files).
    Every rank builds it from the same texts, so no rank waits for another or needs a shared disk (write_char_vocab
    is deterministic; that every node read the same texts is checked on the tokenized data, see agree_on_data).
    """
    from paddlenlp.transformers import AutoTokenizer, BertTokenizer

    from data_utils import write_char_vocab

    if config["pretrained_model"]:
        path = resolve_pretrained(config["pretrained_model"], config.get("converted_model_dir") or None)
        if os.path.isdir(path):
            from hf_to_paddle import has_tokenizer, no_tokenizer_message

            if not has_tokenizer(path):
                raise ConfigError(f"pretrained_model {config['pretrained_model']}: " + no_tokenizer_message(path))
        return AutoTokenizer.from_pretrained(path), {}
    vocab = write_char_vocab(texts, os.path.join(staging_dir(), "vocab.txt"))
    return BertTokenizer(vocab_file=vocab), {"vocab.txt": vocab}


def vocab_size(tokenizer):
    return len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else tokenizer.vocab_size


def count_parameters(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def load_trained(path, model_class, device="auto", defaults=None):
    """For prediction CLIs: (model_dir, model in eval mode, tokenizer, the training config it was saved
    with over `defaults`). `path` may be an output_dir (see resolve_model_dir)."""
    from paddlenlp.transformers import AutoTokenizer

    model_dir = resolve_model_dir(path)
    config = dict(defaults or {})
    config_file = os.path.join(model_dir, TRAIN_CONFIG_FILE)
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            config.update(json.load(f))
    setup_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_model_dir(model_class, model_dir)
    model.eval()
    return model_dir, model, tokenizer, config


# ----------------------------------------------------------------------------
# optimizer and schedule
# ----------------------------------------------------------------------------
def resolve_warmup(config):
    """A positive warmup_steps wins over warmup_proportion (LinearDecayWithWarmup takes either)."""
    return int(config["warmup_steps"]) if config.get("warmup_steps", 0) > 0 else float(config["warmup_proportion"])


def no_decay_param_names(model):
    """Biases and norm weights are not decayed: decaying a LayerNorm scale towards 0 only hurts."""
    return {p.name for n, p in model.named_parameters() if "bias" in n or "norm" in n.lower() or "ln" in n.split(".")}


def build_optimizer(model, config, num_training_steps):
    import paddle
    from paddlenlp.transformers import LinearDecayWithWarmup

    lr_scheduler = LinearDecayWithWarmup(config["learning_rate"], num_training_steps, resolve_warmup(config))
    no_decay = no_decay_param_names(model)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=lr_scheduler,
        epsilon=config["adam_epsilon"],
        parameters=model.parameters(),
        weight_decay=config["weight_decay"],
        apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(config["max_grad_norm"]) if config.get("max_grad_norm", 0) > 0 else None,
    )
    return optimizer, lr_scheduler


# ----------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------
@dataclasses.dataclass
class TrainingTask:
    """What a trainer hands the engine. Evaluation is described per split (see evaluation.py): the engine
    deals eval_units[split] across ranks, calls predict_fn on each unit and score_fn on rank 0."""

    config: Dict[str, Any]
    model: Any
    tokenizer: Any
    train_features: List[Any]
    train_lengths: List[int]
    collate_fn: Callable  # (features, rng) -> dict of numpy arrays, plus "num_tokens": real tokens in it
    loss_fn: Callable  # (model, batch of tensors) -> scalar loss
    eval_units: Dict[str, list] = dataclasses.field(default_factory=dict)  # "dev"/"test" -> work units (batches)
    predict_fn: Optional[Callable] = None  # (model, split, unit) -> JSON-serialisable output; runs on every rank
    score_fn: Optional[Callable] = None  # (split, outputs in unit order, step) -> metrics; rank 0; writes predictions
    unit_rows: Callable = len  # rows in a unit, for progress and the per-rank log
    metric_for_best: Optional[str] = None  # the trainer's default; config["metric_for_best"] wins
    extra_files: Optional[Dict[str, Any]] = None  # written into each checkpoint and the final model (label maps, ...)
    staged_files: Optional[Dict[str, str]] = None  # {name: temp path}: moved into output_dir once every check passed
    eval_data: Optional[Dict[str, list]] = None  # "dev"/"test" -> the tokenized rows, fingerprinted: every node must score the same
    sample_rows_fn: Optional[Callable] = None  # () -> wandb table rows after a dev evaluation
    group_by_length: bool = True
    evaluate_at_start: bool = False  # score the starting model as step 0 (not on resume), e.g. perplexity before training
    before_training: Optional[Callable] = None  # (model) -> None on a fresh start, on output_dir's writers (rank 0), once it is open


def _loss_layer(model, loss_fn):
    """DataParallel syncs gradients only for outputs of its own forward: wrap the task's loss in a Layer."""
    import paddle

    class LossLayer(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.inner_model = model

        def forward(self, batch):
            return loss_fn(self.inner_model, batch)

    return LossLayer()


class _StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint at the next step boundary and exits."""

    def __init__(self):
        self.signum = None

    def __call__(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        self.signum = signum
        log(f"received {signal.Signals(signum).name}: will save a checkpoint after this step and exit")

    @contextlib.contextmanager
    def installed(self):
        old = {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def compute_max_steps(config, num_micro_batches_per_epoch):
    steps_per_epoch = max(1, math.ceil(num_micro_batches_per_epoch / config["gradient_accumulation_steps"]))
    if config["max_steps"] > 0:
        return config["max_steps"], steps_per_epoch
    return steps_per_epoch * config["num_train_epochs"], steps_per_epoch


def micro_batch_stream(task, rank, world_size, epoch, position):
    """Yield (epoch, position_after, micro_batch) forever, starting mid-epoch when resuming."""
    cfg = task.config
    while True:
        batches = epoch_batches(
            task.train_lengths, cfg["train_batch_size"], world_size, rank, cfg["seed"], epoch, task.group_by_length
        )
        for index in range(position, len(batches)):
            features = [task.train_features[i] for i in batches[index]]
            yield epoch, index + 1, task.collate_fn(features, batch_rng(cfg["seed"], epoch, index * world_size + rank))
        epoch, position = epoch + 1, 0


def selection(task):
    """(metric, greater_is_better) that pick the best model: the config's metric_for_best, else the trainer's."""
    metric = task.config.get("metric_for_best") or task.metric_for_best
    return metric, resolve_greater_is_better(metric, task.config.get("greater_is_better")) if metric else True


def evaluate(task, model, split, step, use_amp=False, amp_dtype="float16"):
    """Metrics of one split on every rank (None when the task has no such split); see evaluation.evaluate_split."""
    from evaluation import evaluate_split

    if split not in task.eval_units or task.predict_fn is None:
        return None
    return evaluate_split(model, split, task.eval_units[split], task.predict_fn, task.score_fn, step,
                          use_amp=use_amp, amp_dtype=amp_dtype, unit_rows=task.unit_rows)


def check_same_data_on_every_rank(task, train_fingerprint=None):
    """Each node reads its own data files and builds its own vocab: the tokenized splits must be equal on every rank."""
    if get_world_size() == 1:
        return
    fingerprints = {split: data_fingerprint(rows) for split, rows in (task.eval_data or {}).items()}
    if train_fingerprint is not None:
        fingerprints["train"] = train_fingerprint
    agree_on_data(fingerprints)


def new_train_state(metric):
    return {"global_step": 0, "epoch": 0, "position": 0, "best_metric": None, "best_step": None, "best_checkpoint": None,
            "metric_for_best": metric, "evals_without_improvement": 0, "world_size": get_world_size()}


def run_training(task):
    """Train, evaluate, checkpoint and report; then keep the best model (load_best_model_at_end), score the test
    split with it and export it to the root of output_dir. With do_train=False, only evaluate (run_evaluation).
    Returns the final train state dict."""
    import paddle

    from evaluation import should_stop_early, update_best

    cfg = task.config
    if not cfg.get("do_train", True):
        return run_evaluation(task)
    out = cfg["output_dir"]
    rank, world_size = get_rank(), get_world_size()
    device = paddle.get_device()
    use_amp, amp_dtype = resolve_amp(cfg, "gpu" if device.startswith("gpu") else "cpu")
    accum = cfg["gradient_accumulation_steps"]
    if accum < 1:
        raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {accum}")

    fingerprint = data_fingerprint(task.train_features)  # in every checkpoint: a resume must see the same data
    # Before DataParallel, whose start broadcasts rank 0's weights: another vocab means other shapes, and gloo fails
    # on them with a message about buffer sizes.
    check_same_data_on_every_rank(task, fingerprint)
    micro_per_epoch = len(epoch_batches(task.train_lengths, cfg["train_batch_size"], world_size, rank, cfg["seed"], 0, task.group_by_length))
    max_steps, steps_per_epoch = compute_max_steps(cfg, micro_per_epoch)
    save_steps = cfg["save_steps"]
    eval_steps = cfg.get("eval_steps") or save_steps
    metric, greater = selection(task)
    patience, threshold = cfg.get("early_stopping_patience", 0), cfg.get("early_stopping_threshold", 0.0)
    model = task.model
    optimizer, lr_scheduler = build_optimizer(model, cfg, max_steps)
    scaler = paddle.amp.GradScaler(enable=use_amp and amp_dtype == "float16", init_loss_scaling=cfg["scale_loss"])
    if cfg.get("fast_kernels", True):
        speedups.use_fast_cpu_kernels(model)
    train_model = _loss_layer(model, task.loss_fn)
    if world_size > 1:
        train_model = paddle.DataParallel(train_model)

    state = new_train_state(metric)
    resume_path = agree_on_resume(lambda: resolve_resume(cfg))  # the checkpoint, read and verified (or None), the same on every rank
    if resume_path:
        for note in check_resume_compatible(resume_path, cfg, world_size, fingerprint, ignore_mismatch=cfg.get("resume_ignore_mismatch", False)):
            log(note)
        check_max_steps(resume_path.step, max_steps, resume_path.name)
        saved = load_checkpoint(resume_path, model, optimizer, lr_scheduler, scaler)
        state.update(saved["train_state"])
        set_rng_state(load_rank_rng(resume_path, rank, saved["rng"]))
    # Every check has passed: from here on output_dir may change.
    open_output_dir(cfg)
    copy_staged_files(task.staged_files, out)
    if resume_path:
        log(f"resumed from {resume_path}: step {state['global_step']}, epoch {state['epoch']}, batch {state['position']} of {micro_per_epoch}")
    if cfg.get("resume_from_checkpoint"):
        # Lines a killed run logged past its checkpoint (all of them, when there was none) are replayed.
        truncate_jsonl(os.path.join(out, "train_log.jsonl"), state["global_step"])
        truncate_jsonl(os.path.join(out, "metrics.jsonl"), state["global_step"])
    elif task.before_training is not None and writes_output():
        task.before_training(model)

    global_batch = cfg["train_batch_size"] * world_size * accum
    log(
        f"training: {len(task.train_features)} examples, {max_steps} steps ({steps_per_epoch} per epoch), "
        f"global batch {global_batch} = {cfg['train_batch_size']} per device x {world_size} device(s) x {accum} accumulation, "
        f"device {device}{f' ({cpu_threads()} math threads)' if device == 'cpu' else ''}, "
        f"{'AMP ' + amp_dtype if use_amp else 'fp32'}, {count_parameters(model) / 1e6:.2f}M parameters"
    )
    if "dev" in task.eval_units and eval_steps % save_steps != 0 and max_steps > eval_steps:
        warn_once(f"eval_steps={eval_steps} is not a multiple of save_steps={save_steps}: an evaluation that beats the best "
                  "between saves saves a checkpoint of its own, so the best can be kept; use a multiple to avoid the extra saves")
    reporter = open_reporting(cfg.get("report_to", ""), cfg, out, run_id=state.get("wandb_run_id"),
                              resume_step=state["global_step"] if cfg.get("resume_from_checkpoint") else None)
    wandb_run_id = broadcast_from_main(reporter.wandb_run_id)  # only rank 0 reports; every node's checkpoints name its run
    if wandb_run_id:
        state["wandb_run_id"] = wandb_run_id
    stream = micro_batch_stream(task, rank, world_size, state["epoch"], state["position"])
    train_log = os.path.join(out, "train_log.jsonl")
    metrics_log = os.path.join(out, "metrics.jsonl")
    stop = _StopRequest()
    bar = progress_bar(max_steps, "train", initial=state["global_step"])
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "skipped": 0, "start": time.perf_counter()}
    totals = {"steps": 0, "loss": 0.0, "tokens": 0, "start": time.perf_counter()}
    # The checkpoint we resumed from was evaluated and saved already: doing it again would log twice.
    last_eval_step = last_save_step = state["global_step"] if resume_path else -1
    dev_metrics_by_step = {}

    def evaluate_dev(step):
        """Score dev, log it, and record it in the selection state. Returns True for a new best."""
        metrics = evaluate(task, model, "dev", step, use_amp, amp_dtype)
        if metrics is None:
            return False
        dev_metrics_by_step[step] = metrics
        if is_main_process():
            append_jsonl(metrics_log, {"step": step, **metrics})
            reporter.scalars({f"eval/{k}": v for k, v in metrics.items()}, step)
            rows = task.sample_rows_fn() if task.sample_rows_fn is not None else None
            if rows:
                reporter.table("eval/samples", list(rows[0].keys()), [list(r.values()) for r in rows], step)
        if step == 0:  # the starting model is a reference, not a candidate
            log("eval at step 0 (before training): " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            return False
        improved = update_best(state, metrics, step, metric, greater, threshold)
        log(f"eval at step {step}: " + ", ".join(f"{k}={v}" for k, v in metrics.items())
            + (f" (new best {metric})" if improved else f" (best {metric}={state['best_metric']} at step {state['best_step']})"))
        return improved

    def save(step):
        # Each rank's dropout stream is its own: every rank's RNG goes into every writer's checkpoint, through the
        # store, so each node's copy is complete without a shared disk.
        rng_states = all_gather(rng_state_to_json(get_rng_state()))
        if state["best_step"] == step:
            state["best_checkpoint"] = f"{CHECKPOINT_PREFIX}{step}"  # relative to output_dir, wherever it moves
        if writes_output():
            path = save_checkpoint(out, step, model, task.tokenizer, optimizer, lr_scheduler, scaler, dict(state), cfg, task.extra_files,
                                   rng_states=rng_states, data_fingerprint=fingerprint)
            best = [os.path.join(out, state["best_checkpoint"])] if state["best_checkpoint"] else []
            removed = rotate_checkpoints(out, cfg.get("save_total_limit", 0), keep=best)
            write_run_state(out, state)
        if is_main_process():
            reporter.flush()  # a resume carries over only what reached the disk
            log(f"saved {path}" + (f" (best {metric}={state['best_metric']}: {state['best_checkpoint']})" if state["best_checkpoint"] else "")
                + (f"; removed {', '.join(os.path.basename(p) for p in removed)}" if removed else ""))
        barrier()

    if task.evaluate_at_start and not resume_path:
        evaluate_dev(0)
    stopped_early = resume_path is not None and should_stop_early(state, patience)
    reseed_paddle = not paddle_cpu_rng_checkpoints()
    model.train()
    with stop.installed():
        while True:
            step = state["global_step"]
            lr = lr_scheduler.get_lr()
            # maybe evaluate and save (at eval/save intervals, when a new best needs keeping, and at the end)
            if step > 0 and (step % eval_steps == 0 or step >= max_steps) and step != last_eval_step:
                improved = evaluate_dev(step)
                last_eval_step = step
                if improved and step % save_steps != 0 and step < max_steps and step != last_save_step:
                    save(step)  # the best must be on disk to be loaded back at the end
                    last_save_step = step
                if should_stop_early(state, patience):
                    stopped_early = True
                    state["stopped_early_at"] = step
                    log(f"early stopping at step {step}: {metric} has not improved by more than {threshold} for {patience} "
                        f"evaluation(s); best {state['best_metric']} at step {state['best_step']}")
            if step > 0 and (step % save_steps == 0 or step >= max_steps or stopped_early) and step != last_save_step:
                save(step)
                last_save_step = step
            if step >= max_steps or stopped_early:
                break
            if reseed_paddle:  # paddle 2.6: its CPU RNG cannot be checkpointed (rng.paddle_cpu_rng_checkpoints)
                reseed_paddle_cpu(cfg["seed"], step, rank)

            # forward under auto_cast, scaled backward, accumulated over micro-batches
            step_loss, step_tokens = 0.0, 0
            for micro in range(accum):
                epoch, position, batch = next(stream)
                sync = contextlib.nullcontext() if (world_size == 1 or micro == accum - 1) else train_model.no_sync()
                step_tokens += batch.pop("num_tokens", 0)
                with sync:
                    with paddle.amp.auto_cast(enable=use_amp, dtype=amp_dtype, level="O1"):
                        loss = train_model(to_tensors(batch))
                    scaler.scale(loss / accum).backward()
                step_loss += float(loss) / accum
            step_loss = mean_across_ranks(step_loss)
            # float16 AMP: GradScaler skips a step with inf/NaN grads and lowers the scale. Without
            # loss scaling (fp32, bfloat16) nothing would skip it, and one NaN step poisons every weight.
            if not scaler.is_enable() and not math.isfinite(step_loss):
                raise TrainingError(
                    f"loss is {step_loss} at step {step + 1} ({'AMP ' + amp_dtype if use_amp else 'fp32'}, no loss scaling): "
                    f"stopping. The last good checkpoint is kept: "
                    f"{latest_checkpoint(out) or 'none yet'}. Lower learning_rate or check the data"
                )
            # clip (ClipGradByGlobalNorm inside the optimizer), step; GradScaler skips inf/NaN steps under AMP
            scaler.step(optimizer)
            scaler.update()
            optimizer.clear_grad()
            lr_scheduler.step()
            skipped = amp_step_skipped(scaler)
            state["amp_skipped_in_a_row"] = skipped_in_a_row(state.get("amp_skipped_in_a_row", 0), skipped)
            window["skipped"] += skipped
            reason = amp_stop_reason(state["amp_skipped_in_a_row"], loss_scale(scaler))
            if reason:
                raise TrainingError(
                    f"{reason} at step {step + 1}: the model is not learning, stopping. The last good checkpoint is kept: "
                    f"{latest_checkpoint(out) or 'none yet'}. Try amp_dtype=\"bfloat16\" or a lower learning_rate")
            state.update(global_step=step + 1, epoch=epoch, position=position)
            if position >= micro_per_epoch:  # the epoch ended exactly here: resume starts the next one
                state.update(epoch=epoch + 1, position=0)

            # log
            window["loss"] += step_loss
            window["steps"] += 1
            window["tokens"] += step_tokens * world_size
            totals.update(steps=totals["steps"] + 1, loss=totals["loss"] + step_loss, tokens=totals["tokens"] + step_tokens * world_size)
            bar.update(1)
            if state["global_step"] % cfg["logging_steps"] == 0 or state["global_step"] == max_steps:
                elapsed = time.perf_counter() - window["start"]
                record = {
                    "step": state["global_step"],
                    "epoch": round(state["global_step"] / steps_per_epoch, 4),
                    "loss": window["loss"] / window["steps"],
                    "lr": lr,
                    "tokens": window["tokens"],  # real (non-pad) source + target tokens in this window, all ranks
                    "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9), 1),
                }
                if scaler.is_enable():
                    record["skipped_steps"] = window["skipped"]  # steps GradScaler skipped (inf/NaN gradients)
                append_jsonl(train_log, record)
                reporter.scalars({"train/loss": record["loss"], "train/lr": lr, "train/tokens_per_s": record["tokens_per_s"]}, record["step"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                log(f"step {record['step']}/{max_steps} loss {record['loss']:.4f} lr {lr:.3e} {record['tokens_per_s']:.0f} tok/s")
                window = {"loss": 0.0, "steps": 0, "tokens": 0, "skipped": 0, "start": time.perf_counter()}

            # stop check: a signal saves where we are and exits cleanly
            if broadcast_flag(stop.signum is not None):
                save(state["global_step"])
                bar.close()
                reporter.close()
                if is_main_process():
                    plot_training_curves(out)
                log(f"stopped by signal at step {state['global_step']}; resume with --resume_from_checkpoint=auto")
                raise SystemExit(128 + (stop.signum or signal.SIGTERM))
    bar.close()
    runtime = time.perf_counter() - totals["start"]

    # the model the run keeps: the best (load_best_model_at_end) or the last; the test split is scored with it
    final_step = state["global_step"]
    if cfg.get("load_best_model_at_end", True) and state["best_checkpoint"] and state["best_step"] != final_step:
        best_path = os.path.join(out, state["best_checkpoint"])
        if all(all_gather(os.path.isdir(best_path))):  # each node reads its own copy: all of them, or every rank keeps the last
            apply_model_weights(model, *read_model_weights(best_path))
            final_step = state["best_step"]
        else:
            warn_once(f"the best checkpoint {state['best_checkpoint']} ({metric}={state['best_metric']}) is no longer in {out}: "
                      f"keeping the last model (step {final_step})")
    state["final_model_step"] = final_step
    log(f"final model: step {final_step} ("
        + (f"best {metric}={state['best_metric']}" if final_step == state["best_step"] else "the last step") + f"), exported to {out}")
    if writes_output():
        export_final_model(model, task.tokenizer, out, task.extra_files)
    dev_metrics = dev_metrics_by_step.get(final_step) if last_eval_step == final_step else None
    if dev_metrics is None:  # predictions_dev.jsonl and the final dev metrics come from the kept model
        dev_metrics = evaluate(task, model, "dev", final_step, use_amp, amp_dtype)
    test_metrics = evaluate(task, model, "test", final_step, use_amp, amp_dtype)
    if test_metrics is not None:
        append_jsonl(metrics_log, {"step": final_step, "split": "test", **test_metrics})
        log("test: " + ", ".join(f"{k}={v}" for k, v in test_metrics.items()))
    results = {
        "train_runtime": round(runtime, 3), "train_steps": totals["steps"], "global_step": state["global_step"],
        "epoch": round(state["global_step"] / steps_per_epoch, 4),
        "train_loss": round(totals["loss"] / totals["steps"], 6) if totals["steps"] else None,
        "train_samples_per_second": round(totals["steps"] * global_batch / runtime, 3) if totals["steps"] else None,
        "train_tokens_per_second": round(totals["tokens"] / runtime, 1) if totals["steps"] else None,
        "metric_for_best": metric, "best_metric": state["best_metric"], "best_step": state["best_step"],
        "best_checkpoint": state["best_checkpoint"], "final_model_step": final_step,
        **{f"eval_{k}": v for k, v in (dev_metrics or {}).items()},
        **{f"test_{k}": v for k, v in (test_metrics or {}).items()},
    }
    results["final_model"] = out
    if writes_output():
        write_run_state(out, state)
    if is_main_process():
        results = write_results(out, results)
        plot_training_curves(out, best_step=state["best_step"])
    reporter.summary({k: v for k, v in results.items() if v is not None})
    reporter.close()
    log("\n".join(summary_lines(results)))
    state["results"] = results
    return state


def run_evaluation(task):
    """do_train=False: score the loaded model on dev and test (HF's --do_eval / --do_predict) into metrics.jsonl and
    all_results.json."""
    import paddle

    cfg = task.config
    out = cfg["output_dir"]
    use_amp, amp_dtype = resolve_amp(cfg, "gpu" if paddle.get_device().startswith("gpu") else "cpu")
    check_same_data_on_every_rank(task)
    if cfg.get("fast_kernels", True):  # the layers training evaluates with: the same numbers
        speedups.use_fast_cpu_kernels(task.model)
    open_output_dir(cfg)
    copy_staged_files(task.staged_files, out)
    log(f"do_train=False: evaluating {cfg.get('pretrained_model') or 'the model built from model_config'}")
    results = {}
    for split, prefix in (("dev", "eval"), ("test", "test")):
        metrics = evaluate(task, task.model, split, 0, use_amp, amp_dtype)
        if metrics is not None:
            append_jsonl(os.path.join(out, "metrics.jsonl"), {"step": 0, "split": split, **metrics})
            log(f"{split}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            results.update({f"{prefix}_{k}": v for k, v in metrics.items()})
    if not results:
        warn_once("do_train=False with no dev or test data: nothing to evaluate")
    if is_main_process():
        results = write_results(out, results)
    log("\n".join(summary_lines(results)))
    return {"global_step": 0, "results": results}


def export_final_model(model, tokenizer, output_dir, extra_files=None):
    """The kept model at the root of output_dir (HF/PaddleNLP convention: from_pretrained(output_dir) loads it).
    Written next to it first, then moved in file by file, so a crash never leaves half a file."""
    tmp = os.path.join(output_dir, f".tmp-final-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_files(model, tokenizer, tmp, extra_files)
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    os.rmdir(tmp)
