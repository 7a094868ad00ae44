"""The engine shared by every trainer: config, device, model loading, optimizer,
length-grouped batching, the training loop, evaluation hooks, atomic checkpoints,
exact resume, data-parallel scale-out and reporting.

A trainer (train.py, train_classification.py, ...) builds a TrainingTask (model,
features, collate, loss and evaluate functions) and calls run_training(task).
"""
import ast
import contextlib
import dataclasses
import difflib
import json
import math
import os
import pprint
import random
import re
import shutil
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np



def mkl_cpu_type(cpuinfo_path="/proc/cpuinfo"):
    """The MKL_DEBUG_CPU_TYPE for this CPU, or None to leave MKL alone (issue #7).

    Paddle bundles MKL 2019, which gives AMD CPUs a generic SSE code path. Told the CPU type, it uses
    the vector units the CPU has: "7" is its AVX-512 (Skylake) path, "5" its AVX2 path. Measured on an
    AMD EPYC (Zen 5): a 6400x256x1024 GEMM takes 6.6 ms with 7, 12.8 ms with 5, and far longer without.
    Intel CPUs are detected by MKL itself. Types 6 and 8 are Xeon Phi paths (8 dies with SIGILL on Zen 5),
    so only the two whose instruction sets the CPU's flags list are ever chosen.
    """
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            head = f.read(65536)
    except OSError:
        return None
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", head, re.M)
    flags = re.search(r"^flags\s*:(.*)$", head, re.M)
    if not vendor or vendor.group(1) != "AuthenticAMD" or not flags:
        return None
    flags = set(flags.group(1).split())
    if {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "7"
    if {"avx2", "fma"} <= flags:
        return "5"
    return None


# CPU math: MKL reads MKL_DEBUG_CPU_TYPE when it first loads, so it is set here, before any paddle
# import; a user's own value wins. Also remember the user's OMP_NUM_THREADS before paddle overwrites
# it with 1 (see setup_device).
_MKL_CPU_TYPE = mkl_cpu_type()
if _MKL_CPU_TYPE and "MKL_DEBUG_CPU_TYPE" not in os.environ:
    os.environ["MKL_DEBUG_CPU_TYPE"] = _MKL_CPU_TYPE
_USER_OMP_NUM_THREADS = os.environ.get("OMP_NUM_THREADS")

CHECKPOINT_PREFIX = "checkpoint-"
COMPLETE_MARKER = "CHECKPOINT_COMPLETE"
TRAINER_STATE_FILE = "trainer_state.pdparams"
OPTIMIZER_FILE = "optimizer.pdopt"
TRAIN_CONFIG_FILE = "train_config.json"
RANK_RNG_FILE = "rng_state_rank{rank}.pdstate"  # ranks > 0; rank 0's RNG is in TRAINER_STATE_FILE


# ----------------------------------------------------------------------------
# config: one plain dict, overridden by --config FILE and --key=value
# ----------------------------------------------------------------------------
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


def save_config(config, output_dir, name=TRAIN_CONFIG_FILE):
    os.makedirs(output_dir, exist_ok=True)
    write_json_atomic(os.path.join(output_dir, name), config)


def write_json_atomic(path, obj):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def run_main(main, defaults, prog, doc=""):
    """Entry-point wrapper: config errors and data errors exit non-zero with one clear line."""
    from data_utils import DataError

    try:
        config = parse_config(defaults, sys.argv[1:], prog=prog, doc=doc)
        return main(config)
    except (ConfigError, DataError, TrainingError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


# ----------------------------------------------------------------------------
# logging and reporting (rank 0 only)
# ----------------------------------------------------------------------------
def get_rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def get_world_size():
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def is_main_process():
    return get_rank() == 0


def log(msg):
    if is_main_process():
        from tqdm import tqdm

        tqdm.write(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stdout)
        sys.stdout.flush()


_warned = set()


def warn_once(msg):
    if msg not in _warned:
        _warned.add(msg)
        log(f"WARNING: {msg}")


def append_jsonl(path, record):
    if not is_main_process():
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _jsonl_step(line):
    """The step of one log line; None for a line a SIGKILL cut in half."""
    try:
        return json.loads(line).get("step", 0)
    except (json.JSONDecodeError, AttributeError):
        return None


def truncate_jsonl(path, max_step):
    """After a resume, drop records a killed run logged past its last checkpoint."""
    if not is_main_process() or not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as f:
        kept = [line for line in f if _jsonl_step(line) is not None and _jsonl_step(line) <= max_step]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


def wandb_has_credentials():
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = os.path.expanduser("~/.netrc")
    return os.path.exists(netrc) and "api.wandb.ai" in open(netrc, encoding="utf-8", errors="ignore").read()


def init_reporting(config, run_id=None):
    """Start wandb when asked; with no credentials it runs offline and says how to sync.

    run_id (saved in every checkpoint) makes a resumed run continue the same wandb run.
    """
    targets = [t.strip() for t in str(config.get("report_to", "")).split(",") if t.strip() and t.strip() != "none"]
    if "wandb" not in targets or not is_main_process():
        return None
    try:
        import wandb
    except ImportError:
        warn_once("report_to includes wandb but wandb is not installed: pip install wandb")
        return None
    if not wandb_has_credentials() and os.environ.get("WANDB_MODE") not in ("disabled", "offline"):
        os.environ["WANDB_MODE"] = "offline"
    run = wandb.init(
        project=config.get("wandb_project") or "paddle-finetune",
        name=config.get("wandb_run_name") or None,
        dir=config["output_dir"],
        config=config,
        id=run_id,
        resume="allow",
    )
    if os.environ.get("WANDB_MODE") == "offline":
        log(f"wandb: no credentials found, logging offline to {os.path.dirname(run.dir)}; upload later with: wandb sync {os.path.dirname(run.dir)}")
    return run


def report(run, metrics, step):
    if run is not None:
        run.log(metrics, step=step)


def report_table(run, name, columns, rows, step):
    if run is not None:
        import wandb

        run.log({name: wandb.Table(columns=columns, data=rows)}, step=step)


def progress_bar(total, desc, initial=0):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not is_main_process(), dynamic_ncols=True, mininterval=1.0)


# ----------------------------------------------------------------------------
# device, seeds, RNG state
# ----------------------------------------------------------------------------
def setup_device(device):
    """'gpu', 'cpu' or 'auto'; a GPU request on a build without CUDA is an error, not a silent fallback."""
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
        paddle.base.core.set_num_threads(cpu_threads())
        # Paddle 3's strided views (transpose without a copy) make every later CPU matmul on them re-gather
        # its input: 24 ms instead of 0.3 ms for cross-attention against cached keys, 2-3x on training attention.
        paddle.set_flags({"FLAGS_use_stride_kernel": False})
        keep_freed_memory()
    return chosen


def cpu_threads():
    """Math threads per process on CPU: OMP_NUM_THREADS when the user set it, else this rank's share of the cores.

    Paddle defaults to 1 thread (it sets OMP_NUM_THREADS=1 on import), which leaves the other cores idle.
    """
    if _USER_OMP_NUM_THREADS and _USER_OMP_NUM_THREADS.isdigit() and int(_USER_OMP_NUM_THREADS) > 0:
        return int(_USER_OMP_NUM_THREADS)
    local_ranks = int(os.environ.get("PADDLE_LOCAL_SIZE", get_world_size()) or 1)
    return max(1, (os.cpu_count() or 1) // max(1, local_ranks))


def keep_freed_memory():
    """Stop glibc from handing big freed blocks back to the OS (issue #7). Returns True when set.

    By default every tensor over the mmap threshold is a fresh mmap, so each CPU op on an activation
    first page-faults its output in: 6400 faults and 6-10 ms for a 26 MB add that takes 0.7 ms on
    reused memory. Keeping freed memory in the heap made a small-BART training step 1.13x faster
    (torch: 1.02x, its allocator already reuses). The price is peak RSS: freed blocks stay in the heap
    and fragment, about +15% in tools/benchmark.py. A user's own MALLOC_MMAP_THRESHOLD_ or
    MALLOC_TRIM_THRESHOLD_ wins.
    """
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") or os.environ.get("MALLOC_TRIM_THRESHOLD_"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # Blocks up to 1 GiB come from the heap, and the heap is never trimmed (-1): a 1 GiB trim threshold still
    # gave back a long batch's memory after it, and every later long batch (base BART, 320 tokens) faulted
    # 350000 pages in again.
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, -1))


# ----------------------------------------------------------------------------
# CPU kernels (issue #7): same math as paddle's layers, faster on CPU in training
# ----------------------------------------------------------------------------
_DROPOUT_RNG = np.random.default_rng(0)  # the fast dropout's masks; seeded by set_seed, saved in checkpoints


def _paddle_classes():
    """The PyLayers, built on first use so that importing train_utils does not import paddle."""
    if _paddle_classes.cache is None:
        import paddle
        from paddle.autograd import PyLayer

        class FastLinear(PyLayer):
            """y = x @ W + b with a three-GEMM backward. Paddle's CPU bias gradient is a reduce_sum over
            all rows that costs as much as a GEMM (43 ms vs 0.6 ms as ones @ dy for 6400x1024), and its
            3-D matmul gradient is slower than the 2-D one. The bias is expanded before the add: paddle's
            CPU broadcasting add is several times slower than expand + a same-shape add."""

            @staticmethod
            def forward(ctx, x, weight, bias):
                x2 = x.reshape([-1, x.shape[-1]])
                ctx.save_for_backward(x2, weight)
                ctx.x_shape = x.shape
                y = paddle.matmul(x2, weight)
                return (y + bias.expand(y.shape)).reshape(x.shape[:-1] + [weight.shape[-1]])

            @staticmethod
            def backward(ctx, dy):
                x2, weight = ctx.saved_tensor()
                dy2 = dy.reshape([-1, dy.shape[-1]])
                dx = paddle.matmul(dy2, weight, transpose_y=True).reshape(ctx.x_shape)
                dw = paddle.matmul(x2, dy2, transpose_x=True)
                db = paddle.matmul(paddle.ones([1, dy2.shape[0]], dy2.dtype), dy2).reshape([-1])
                return dx, dw, db

        class FastLayerNorm(PyLayer):
            """LayerNorm over the last axis. Paddle's CPU layer_norm backward takes 12 ms for 6400x256 (its
            forward 0.3 ms). Here row means are GEMVs and every broadcast is an expand then a same-shape op,
            because paddle's CPU broadcasting ops and row reductions are 8-10x slower than either: 6.6 ms in all."""

            @staticmethod
            def forward(ctx, x, weight, bias, epsilon):
                x2 = x.reshape([-1, x.shape[-1]])
                n, d = x2.shape
                average = paddle.full([d, 1], 1.0 / d, x2.dtype)
                centered = x2 - paddle.matmul(x2, average).expand([n, d])
                rstd = paddle.rsqrt(paddle.matmul(centered * centered, average) + epsilon).expand([n, d])
                normed = centered * rstd
                ctx.save_for_backward(normed, rstd, weight, average)
                ctx.x_shape = x.shape
                return (normed * weight.expand([n, d]) + bias.expand([n, d])).reshape(x.shape)

            @staticmethod
            def backward(ctx, dy):
                normed, rstd, weight, average = ctx.saved_tensor()
                dy2 = dy.reshape([-1, dy.shape[-1]])
                n, d = dy2.shape
                g = dy2 * weight.expand([n, d])
                g_mean = paddle.matmul(g, average).expand([n, d])
                g_normed_mean = paddle.matmul(g * normed, average).expand([n, d])
                dx = rstd * (g - g_mean - normed * g_normed_mean)
                ones = paddle.ones([1, n], dy2.dtype)
                dweight = paddle.matmul(ones, dy2 * normed).reshape([-1])
                dbias = paddle.matmul(ones, dy2).reshape([-1])
                return dx.reshape(ctx.x_shape), dweight, dbias

        _paddle_classes.cache = {"linear": FastLinear, "layer_norm": FastLayerNorm}
    return _paddle_classes.cache


_paddle_classes.cache = None


def _training_in_fp32(x, weight):
    import paddle

    return paddle.is_grad_enabled() and not weight.stop_gradient and x.dtype == paddle.float32


def _fast_linear(layer):
    import paddle.nn.functional as F

    def forward(x):
        if _training_in_fp32(x, layer.weight):
            return _paddle_classes()["linear"].apply(x, layer.weight, layer.bias)
        return F.linear(x, layer.weight, layer.bias)

    return forward


def _fast_layer_norm(layer):
    original = layer.forward

    def forward(x):
        if _training_in_fp32(x, layer.weight):
            return _paddle_classes()["layer_norm"].apply(x, layer.weight, layer.bias, layer._epsilon)
        return original(x)

    return forward


def _fast_dropout(layer):
    """Masks from numpy's PCG64: paddle's CPU dropout draws from mt19937 at 12.7 ms for 6400x256
    (3.1 ms this way). Same distribution and upscale_in_train scaling; the stream is _DROPOUT_RNG's."""
    import paddle

    original = layer.forward

    def forward(x):
        if not layer.training or layer.p == 0.0:  # the identity, without an op call per layer per decoding step
            return x
        if layer.p < 1.0 and x.dtype == paddle.float32:
            keep = _DROPOUT_RNG.random(x.shape, dtype=np.float32) >= np.float32(layer.p)
            scale = np.multiply(keep, np.float32(1.0 / (1.0 - layer.p)), dtype=np.float32)
            return x * paddle.to_tensor(scale, place=x.place)
        return original(x)

    return forward


def _fast_attention(layer):
    """Expands a broadcast additive mask to the score shape before paddle's attention adds it:
    its CPU add of a [B,1,1,S] mask to [B,H,S,S] scores takes 15.8 ms; expand + add 1.2 ms."""
    import paddle

    original = layer.forward

    def forward(query, key=None, value=None, attn_mask=None, cache=None):
        if attn_mask is not None and cache is None and attn_mask.dtype == query.dtype and attn_mask.ndim == 4:
            key_length = (query if key is None else key).shape[1]
            shape = [query.shape[0], layer.num_heads, query.shape[1], key_length]
            if list(attn_mask.shape) != shape:
                attn_mask = paddle.expand(attn_mask, shape)
        return original(query, key, value, attn_mask, cache)

    return forward


def _fast_bart_positions(layer):
    """BART's learned positions as a [batch, length] lookup while training: the [length, d_model] table
    slice broadcast over the batch had a gradient that is a CPU reduce_sum over the batch (8 ms for
    32x200x256); as a lookup it is an embedding gradient (scatter-add) and a same-shape add."""
    import paddle

    original = layer.forward

    def forward(input_ids_shape, past_key_values_length=0):
        if not paddle.is_grad_enabled() or layer.weight.stop_gradient:
            return original(input_ids_shape, past_key_values_length)
        batch, length = input_ids_shape[:2]
        positions = paddle.arange(past_key_values_length + layer.offset, past_key_values_length + layer.offset + length, dtype="int64")
        return paddle.nn.functional.embedding(positions.unsqueeze(0).expand([batch, length]), layer.weight)

    return forward


def use_fast_cpu_kernels(model):
    """On CPU, swap slow paddle kernels in `model`'s layers for faster ones with the same math (issue #7).

    * biased nn.Linear and nn.LayerNorm: PyLayers with cheaper backwards, while gradients are on;
    * nn.Dropout (upscale_in_train): masks drawn by numpy in training, no op at all in eval;
    * nn.MultiHeadAttention: broadcast additive masks expanded first;
    * BART's learned positions: a per-example lookup while training.
    Inference keeps paddle's own linear and layer norm. Returns {kind: layers switched}.
    tests/test_train_speed_equivalence.py checks gradients and training losses against paddle's layers.
    """
    import paddle

    counts = {"linear": 0, "layer_norm": 0, "dropout": 0, "attention": 0, "positions": 0}
    if not paddle.get_device().startswith("cpu"):
        return counts
    for layer in model.sublayers(include_self=True):
        if getattr(layer, "_fast_cpu_kernel", False):
            continue
        kind = type(layer)
        if kind is paddle.nn.Linear and layer.bias is not None:
            layer.forward, name = _fast_linear(layer), "linear"
        elif kind is paddle.nn.LayerNorm and layer.weight is not None and layer.bias is not None and len(layer._normalized_shape) == 1:
            layer.forward, name = _fast_layer_norm(layer), "layer_norm"
        elif kind is paddle.nn.Dropout and layer.axis is None and layer.mode == "upscale_in_train":
            layer.forward, name = _fast_dropout(layer), "dropout"
        elif kind is paddle.nn.MultiHeadAttention:
            layer.forward, name = _fast_attention(layer), "attention"
        elif kind.__name__ == "BartLearnedPositionalEmbedding" and hasattr(layer, "offset"):
            layer.forward, name = _fast_bart_positions(layer), "positions"
        else:
            continue
        layer._fast_cpu_kernel = True
        counts[name] += 1
    return counts


def set_seed(seed):
    import paddle

    global _DROPOUT_RNG
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    _DROPOUT_RNG = np.random.default_rng([seed, get_rank()])


def get_rng_state():
    import paddle

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state(),
             "dropout": _DROPOUT_RNG.bit_generator.state}
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["paddle_cuda"] = paddle.get_cuda_rng_state()
    return state


def set_rng_state(state):
    import paddle

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "dropout" in state:  # checkpoints written before the fast dropout have none
        _DROPOUT_RNG.bit_generator.state = state["dropout"]
    if "paddle_cuda" in state and paddle.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(state["paddle_cuda"])


def resolve_amp(config, device):
    """(use_amp, amp_dtype). AMP is a GPU feature: on CPU paddle.amp.auto_cast is a no-op, so say so once and run fp32."""
    dtype = config.get("amp_dtype", "float16")
    if dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"amp_dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    if config.get("use_amp") and device != "gpu":
        warn_once("use_amp=True ignored: AMP needs a GPU (paddle.amp.auto_cast does nothing on CPU); training in fp32")
        return False, dtype
    return bool(config.get("use_amp")), dtype


# ----------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------
def looks_like_path(name):
    return name.startswith((".", "/", "~")) or os.sep in name or os.path.exists(name)


def resolve_pretrained(name_or_path, cache_dir=None):
    """A paddlenlp name, a local Paddle directory, or a local HF directory (converted once, cached)."""
    if not looks_like_path(name_or_path):
        return name_or_path
    path = os.path.expanduser(name_or_path)
    if not os.path.isdir(path):
        raise ConfigError(f"pretrained_model directory not found: {name_or_path}")
    from tools.convert_hf_to_paddle import ensure_paddle_checkpoint, is_hf_checkpoint_dir

    if is_hf_checkpoint_dir(path):
        # Rank 0 converts; the others wait and then find the finished conversion in the cache.
        if is_main_process():
            ensure_paddle_checkpoint(path, cache_dir)
        barrier()
        return ensure_paddle_checkpoint(path, cache_dir)
    return path


def load_model(model_class, config, **model_kwargs):
    """From pretrained_model when set, else a fresh model built from model_config."""
    if config.get("pretrained_model"):
        path = resolve_pretrained(config["pretrained_model"], config.get("converted_model_dir") or None)
        log(f"loading {model_class.__name__} from {path}")
        try:
            return model_class.from_pretrained(path, **model_kwargs)
        except Exception as e:  # noqa: BLE001 - paddlenlp raises many types for a bad name
            raise ConfigError(f"could not load pretrained_model {config['pretrained_model']!r}: {type(e).__name__}: {e}") from e
    if not config.get("model_config"):
        raise ConfigError("set pretrained_model (a name or directory) or model_config (a dict) to build a model")
    model_config = model_class.config_class(**{**config["model_config"], **model_kwargs})
    log(f"building {model_class.__name__} from model_config (no pretrained weights)")
    return model_class(model_config)


def load_tokenizer(config, texts):
    """The pretrained model's tokenizer, or a character vocab written from the training texts (rank 0 writes it)."""
    from paddlenlp.transformers import AutoTokenizer, BertTokenizer

    from data_utils import write_char_vocab

    if config["pretrained_model"]:
        return AutoTokenizer.from_pretrained(resolve_pretrained(config["pretrained_model"], config.get("converted_model_dir") or None))
    vocab = os.path.join(config["output_dir"], "vocab.txt")
    if is_main_process():
        write_char_vocab(texts, vocab)
    barrier()
    return BertTokenizer(vocab_file=vocab)


def vocab_size(tokenizer):
    return len(tokenizer.vocab) if hasattr(tokenizer, "vocab") else tokenizer.vocab_size


def count_parameters(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


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
# batching: length-grouped, sharded per rank, resumable mid-epoch
# ----------------------------------------------------------------------------
def length_grouped_batches(lengths, batch_size, seed, epoch, group_batches=50):
    """Shuffle, then sort inside windows of `group_batches` batches so each batch holds similar lengths.

    Dynamic padding then pads each batch only to its own longest item. The window keeps
    batches random across the epoch; the longest batch goes first so an OOM shows at once.
    """
    rng = np.random.RandomState((seed * 1000003 + epoch) % (2**32))
    order = rng.permutation(len(lengths))
    window = batch_size * group_batches
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: -lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
    batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def shuffled_batches(n, batch_size, seed, epoch):
    rng = np.random.RandomState((seed * 1000003 + epoch) % (2**32))
    order = rng.permutation(n)
    return [list(order[i:i + batch_size]) for i in range(0, n, batch_size)]


def epoch_batches(lengths, per_device_batch_size, world_size, rank, seed, epoch, group_by_length=True):
    """This rank's micro-batches for one epoch.

    Batches are formed at the *global* size and then split across ranks, so N ranks see
    exactly the batches one process with an N-times larger batch would see. A short last
    batch is completed from the epoch's start, so every rank runs the same number of steps.
    """
    global_size = per_device_batch_size * world_size
    if group_by_length:
        batches = length_grouped_batches(lengths, global_size, seed, epoch)
    else:
        batches = shuffled_batches(len(lengths), global_size, seed, epoch)
    if world_size > 1 and len(batches[-1]) < global_size:
        batches[-1] = list(batches[-1]) + [i for b in batches for i in b][: global_size - len(batches[-1])]
    return [list(b[rank * per_device_batch_size:(rank + 1) * per_device_batch_size]) for b in batches]


def batch_rng(seed, epoch, index):
    """Per-batch randomness (e.g. MLM masking) that a resume reproduces exactly."""
    return np.random.RandomState((seed * 7919 + epoch * 104729 + index) % (2**32))


def to_tensors(batch):
    import paddle

    return {k: paddle.to_tensor(v) for k, v in batch.items()}


# ----------------------------------------------------------------------------
# checkpoints: written to a temp dir, marked complete, renamed into place
# ----------------------------------------------------------------------------
def unwrap_model(model):
    """The bare model inside DataParallel and the loss wrapper."""
    while hasattr(model, "_layers") or hasattr(model, "inner_model"):
        model = getattr(model, "_layers", None) or getattr(model, "inner_model")
    return model


def checkpoint_step(name):
    m = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name)
    return int(m.group(1)) if m else None


def list_checkpoints(output_dir):
    """Complete checkpoints, oldest first. Half-written ones lack the marker and are invisible."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        step = checkpoint_step(name)
        path = os.path.join(output_dir, name)
        if step is not None and os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
            found.append((step, path))
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir):
    ckpts = list_checkpoints(output_dir)
    return ckpts[-1] if ckpts else None


def save_model_files(model, tokenizer, directory, extra_files=None):
    """The one place a model is unwrapped and saved: checkpoints and final exports both use it."""
    os.makedirs(directory, exist_ok=True)
    unwrap_model(model).save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
    for name, content in (extra_files or {}).items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2))


def save_checkpoint(output_dir, step, model, tokenizer, optimizer, lr_scheduler, scaler, train_state, config, extra_files=None):
    """Atomic: a crash at any point leaves either the old checkpoint set or the new one complete."""
    import paddle

    final = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    tmp = os.path.join(output_dir, f".tmp-{CHECKPOINT_PREFIX}{step}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model_files(model, tokenizer, tmp, extra_files)
    paddle.save(optimizer.state_dict(), os.path.join(tmp, OPTIMIZER_FILE))
    paddle.save(
        {
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "train_state": train_state,
            "rng": get_rng_state(),
        },
        os.path.join(tmp, TRAINER_STATE_FILE),
    )
    write_json_atomic(os.path.join(tmp, TRAIN_CONFIG_FILE), config)
    write_json_atomic(os.path.join(tmp, "train_state.json"), train_state)
    for rank in range(1, get_world_size()):
        os.replace(rank_rng_path(output_dir, step, rank), os.path.join(tmp, RANK_RNG_FILE.format(rank=rank)))
    with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
        f.write(f"step {step}\n")
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(final):
        # Re-saving the same step (e.g. a signal right after a save): swap, never leave a gap.
        old = final + f".old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def rank_rng_path(output_dir, step, rank):
    return os.path.join(output_dir, f".tmp-rng-{step}-rank{rank}.pdstate")


def save_rank_rng(output_dir, step, rank):
    import paddle

    # Nested like TRAINER_STATE_FILE: paddle.load turns a top-level dict's arrays into tensors,
    # which fails on numpy's uint32 RNG key.
    paddle.save({"rng": get_rng_state()}, rank_rng_path(output_dir, step, rank))


def load_rank_rng(checkpoint, rank, default):
    """Rank r's own RNG state when the checkpoint has one (data parallel), else rank 0's."""
    import paddle

    path = os.path.join(checkpoint, RANK_RNG_FILE.format(rank=rank))
    return paddle.load(path)["rng"] if rank > 0 and os.path.isfile(path) else default


def rotate_checkpoints(output_dir, save_total_limit, keep):
    """Delete the oldest checkpoints beyond the limit, never one in `keep` (the best) nor the newest."""
    if not save_total_limit or save_total_limit <= 0:
        return []
    ckpts = list_checkpoints(output_dir)
    protected = {os.path.abspath(p) for p in keep if p} | {os.path.abspath(p) for p in ckpts[-1:]}
    remaining, removed = list(ckpts), []
    for path in ckpts:  # oldest first
        if len(remaining) <= save_total_limit:
            break
        if os.path.abspath(path) in protected:
            continue
        # Drop the marker first: a crash mid-delete must not leave a "complete" torso.
        os.remove(os.path.join(path, COMPLETE_MARKER))
        shutil.rmtree(path, ignore_errors=True)
        remaining.remove(path)
        removed.append(path)
    return removed


def clean_stale_temp_dirs(output_dir):
    if not os.path.isdir(output_dir):
        return
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        if name.startswith(f".tmp-{CHECKPOINT_PREFIX}") or (checkpoint_step(name.split(".old-")[0]) is not None and ".old-" in name):
            shutil.rmtree(path, ignore_errors=True)
        elif name.startswith(".tmp-rng-"):
            os.remove(path)


def load_checkpoint(path, model, optimizer, lr_scheduler, scaler):
    import paddle

    if not os.path.isfile(os.path.join(path, COMPLETE_MARKER)):
        raise ConfigError(f"resume_from_checkpoint: {path} is not a complete checkpoint (no {COMPLETE_MARKER})")
    weights = [f for f in os.listdir(path) if f.endswith(".pdparams") and f != TRAINER_STATE_FILE]
    if not weights:
        raise ConfigError(f"resume_from_checkpoint: no model weights in {path}")
    unwrap_model(model).set_state_dict(paddle.load(os.path.join(path, weights[0])))
    optimizer.set_state_dict(paddle.load(os.path.join(path, OPTIMIZER_FILE)))
    state = paddle.load(os.path.join(path, TRAINER_STATE_FILE))
    lr_scheduler.set_state_dict(state["lr_scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    return state


def resolve_model_dir(path):
    """For prediction CLIs: a model directory as given, or an output_dir: its best checkpoint, else its newest."""
    from data_utils import DataError

    if os.path.isfile(os.path.join(path, "config.json")) or os.path.isfile(os.path.join(path, "model_config.json")):
        return path
    state_file = os.path.join(path, "trainer_state.json")
    if os.path.isfile(state_file):
        with open(state_file, encoding="utf-8") as f:
            best = json.load(f).get("best_checkpoint")
        if best and os.path.isdir(best):
            return best
    newest = latest_checkpoint(path)
    if newest is None:
        raise DataError(f"no model found in {path}: pass a checkpoint-<step> directory, a model directory or an output_dir")
    return newest


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
    print(f"loading {model_dir}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = model_class.from_pretrained(model_dir)
    model.eval()
    return model_dir, model, tokenizer, config


def resolve_resume(config):
    value = config.get("resume_from_checkpoint")
    if not value:
        return None
    if value == "auto":
        path = latest_checkpoint(config["output_dir"])
        if path is None:
            log(f"resume_from_checkpoint=auto: no complete checkpoint in {config['output_dir']}, starting fresh")
        return path
    if not os.path.isdir(value):
        raise ConfigError(f"resume_from_checkpoint: directory not found: {value}")
    return value


def start_run(config):
    """Every trainer's first steps, before any data is read: refuse a used output_dir, pick the device, seed."""
    check_output_dir(config)
    device = setup_device(config["device"])
    init_distributed()
    set_seed(config["seed"])
    describe_config(config)
    return device


def open_output_dir(config):
    """Once the data has passed its checks: create output_dir, drop half-written temp dirs, save the config.

    Bad data stops a run before this, so a fixed rerun is not refused as a non-empty output_dir.
    """
    os.makedirs(config["output_dir"], exist_ok=True)
    clean_stale_temp_dirs(config["output_dir"])
    if is_main_process():
        save_config(config, config["output_dir"])


def check_output_dir(config):
    """Refuse to mix a new run into an old one's files unless asked to resume or overwrite."""
    out = config["output_dir"]
    previous = [n for n in (os.listdir(out) if os.path.isdir(out) else []) if n != "wandb" and not n.startswith(".")]
    if not previous or config.get("resume_from_checkpoint"):
        return
    if not config.get("overwrite_output_dir"):
        raise ConfigError(
            f"output_dir {out} is not empty ({', '.join(sorted(previous)[:5])}{', ...' if len(previous) > 5 else ''}); "
            "nothing was changed. Resume with --resume_from_checkpoint=auto, pick another --output_dir, "
            "or pass --overwrite_output_dir=True to replace it"
        )
    if is_main_process():
        log(f"overwrite_output_dir=True: clearing previous run files in {out}")
        for name in previous:
            path = os.path.join(out, name)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


# ----------------------------------------------------------------------------
# distributed
# ----------------------------------------------------------------------------
def init_distributed():
    import paddle.distributed as dist

    if get_world_size() > 1:
        dist.init_parallel_env()
    return get_rank(), get_world_size()


_barrier_count = 0


def barrier():
    """Wait for every rank, however long rank 0 spends alone evaluating or saving.

    A gloo collective (CPU) times out after 30 s, and an NCCL one after PADDLE_PG_TIMEOUT,
    so the wait goes through the launcher's TCP store instead, which has no deadline.
    If a rank dies, the launcher stops the others.
    """
    global _barrier_count
    if get_world_size() == 1:
        return
    from paddle.base import core

    store = core.create_or_get_global_tcp_store()
    _barrier_count += 1
    key = f"paddle_finetune/barrier/{_barrier_count}"
    store.add(key, 1)
    while store.add(key, 0) < get_world_size():
        time.sleep(0.05)


def mean_across_ranks(value):
    """The global mean of a per-rank float (the loss), so every rank logs and checks the same number."""
    if get_world_size() == 1:
        return value
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([value], dtype="float64")
    dist.all_reduce(t)
    return float(t.item()) / get_world_size()


def broadcast_flag(value):
    """Rank 0's decision (stop on signal) reaches every rank, so all stop at the same step."""
    if get_world_size() == 1:
        return value
    import paddle
    import paddle.distributed as dist

    t = paddle.to_tensor([1 if value else 0], dtype="int64")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# ----------------------------------------------------------------------------
# the training loop
# ----------------------------------------------------------------------------
class TrainingError(RuntimeError):
    """Training cannot go on (e.g. NaN loss in fp32); the last good checkpoint is kept."""


@dataclasses.dataclass
class TrainingTask:
    config: Dict[str, Any]
    model: Any
    tokenizer: Any
    train_features: List[Any]
    train_lengths: List[int]
    collate_fn: Callable  # (features, rng) -> dict of numpy arrays, plus "num_tokens": real tokens in it
    loss_fn: Callable  # (model, batch of tensors) -> scalar loss
    evaluate_fn: Optional[Callable] = None  # (model, step) -> metrics dict; rank 0 only
    metric_for_best: Optional[str] = None
    greater_is_better: bool = True
    extra_files: Optional[Dict[str, Any]] = None  # written into each checkpoint (label maps, ...)
    sample_rows_fn: Optional[Callable] = None  # () -> wandb table rows after eval
    group_by_length: bool = True
    evaluate_at_start: bool = False  # score the starting model as step 0 (not on resume), e.g. perplexity before training


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


def run_training(task):
    """Train, evaluate, checkpoint and report. Returns the final train state dict."""
    import paddle

    cfg = task.config
    out = cfg["output_dir"]
    rank, world_size = get_rank(), get_world_size()
    device = paddle.get_device()
    use_amp, amp_dtype = resolve_amp(cfg, "gpu" if device.startswith("gpu") else "cpu")
    accum = cfg["gradient_accumulation_steps"]
    if accum < 1:
        raise ConfigError(f"gradient_accumulation_steps must be >= 1, got {accum}")

    micro_per_epoch = len(epoch_batches(task.train_lengths, cfg["train_batch_size"], world_size, rank, cfg["seed"], 0, task.group_by_length))
    max_steps, steps_per_epoch = compute_max_steps(cfg, micro_per_epoch)
    eval_steps = cfg.get("eval_steps") or cfg["save_steps"]
    model = task.model
    optimizer, lr_scheduler = build_optimizer(model, cfg, max_steps)
    scaler = paddle.amp.GradScaler(enable=use_amp and amp_dtype == "float16", init_loss_scaling=cfg["scale_loss"])
    use_fast_cpu_kernels(model)
    train_model = _loss_layer(model, task.loss_fn)
    if world_size > 1:
        train_model = paddle.DataParallel(train_model)

    state = {"global_step": 0, "epoch": 0, "position": 0, "best_metric": None, "best_checkpoint": None, "metric_for_best": task.metric_for_best}
    resume_path = resolve_resume(cfg)
    if resume_path:
        saved = load_checkpoint(resume_path, model, optimizer, lr_scheduler, scaler)
        state.update(saved["train_state"])
        set_rng_state(load_rank_rng(resume_path, rank, saved["rng"]))
        log(f"resumed from {resume_path}: step {state['global_step']}, epoch {state['epoch']}, batch {state['position']} of {micro_per_epoch}")
    if cfg.get("resume_from_checkpoint"):
        # Lines a killed run logged past its checkpoint (all of them, when there was none) are replayed.
        truncate_jsonl(os.path.join(out, "train_log.jsonl"), state["global_step"])
        truncate_jsonl(os.path.join(out, "metrics.jsonl"), state["global_step"])

    global_batch = cfg["train_batch_size"] * world_size * accum
    log(
        f"training: {len(task.train_features)} examples, {max_steps} steps ({steps_per_epoch} per epoch), "
        f"global batch {global_batch} = {cfg['train_batch_size']} per device x {world_size} device(s) x {accum} accumulation, "
        f"device {device}, {'AMP ' + amp_dtype if use_amp else 'fp32'}, {count_parameters(model) / 1e6:.2f}M parameters"
    )
    run = init_reporting(cfg, state.get("wandb_run_id"))
    if run is not None:
        state["wandb_run_id"] = run.id
    stream = micro_batch_stream(task, rank, world_size, state["epoch"], state["position"])
    train_log = os.path.join(out, "train_log.jsonl")
    metrics_log = os.path.join(out, "metrics.jsonl")
    stop = _StopRequest()
    bar = progress_bar(max_steps, "train", initial=state["global_step"])
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.time()}
    # The checkpoint we resumed from was evaluated and saved already: doing it again would log twice.
    last_eval_step = last_save_step = state["global_step"] if resume_path else -1
    last_metrics = None

    def evaluate(step):
        nonlocal last_metrics
        model.eval()
        if is_main_process() and task.evaluate_fn is not None:
            metrics = task.evaluate_fn(model, step)
            metrics = {k: round(float(v), 4) for k, v in metrics.items()}
            append_jsonl(metrics_log, {"step": step, **metrics})
            report(run, {f"eval/{k}": v for k, v in metrics.items()}, step)
            if task.sample_rows_fn is not None:
                rows = task.sample_rows_fn()
                if rows:
                    report_table(run, "eval/samples", list(rows[0].keys()), [list(r.values()) for r in rows], step)
            when = " (before training)" if step == 0 else ""
            log(f"eval at step {step}{when}: " + ", ".join(f"{k}={v}" for k, v in metrics.items()))
            last_metrics = metrics
        barrier()
        model.train()

    def save(step):
        if rank > 0:  # each rank's dropout stream is its own; rank 0 files them into the checkpoint
            save_rank_rng(out, step, rank)
        barrier()
        if is_main_process():
            metric = (last_metrics or {}).get(task.metric_for_best) if last_eval_step == step else None
            path = os.path.join(out, f"{CHECKPOINT_PREFIX}{step}")
            best = state["best_metric"]
            if metric is not None and (best is None or (metric > best if task.greater_is_better else metric < best)):
                state["best_metric"], state["best_checkpoint"] = metric, path
            save_checkpoint(out, step, model, task.tokenizer, optimizer, lr_scheduler, scaler, dict(state), cfg, task.extra_files)
            removed = rotate_checkpoints(out, cfg.get("save_total_limit", 0), keep=[state["best_checkpoint"]])
            write_json_atomic(os.path.join(out, "trainer_state.json"), state)
            log(f"saved {path}" + (f" (best {task.metric_for_best}={state['best_metric']}: {state['best_checkpoint']})" if state["best_checkpoint"] else "")
                + (f"; removed {', '.join(os.path.basename(p) for p in removed)}" if removed else ""))
        barrier()

    if task.evaluate_at_start and not resume_path:
        evaluate(0)
    model.train()
    with stop.installed():
        while True:
            step = state["global_step"]
            lr = lr_scheduler.get_lr()
            # maybe evaluate and save (at eval/save intervals and at the end)
            if step > 0 and (step % eval_steps == 0 or step >= max_steps) and step != last_eval_step:
                evaluate(step)
                last_eval_step = step
            if step > 0 and (step % cfg["save_steps"] == 0 or step >= max_steps) and step != last_save_step:
                save(step)
                last_save_step = step
            if step >= max_steps:
                break

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
            state.update(global_step=step + 1, epoch=epoch, position=position)
            if position >= micro_per_epoch:  # the epoch ended exactly here: resume starts the next one
                state.update(epoch=epoch + 1, position=0)

            # log
            window["loss"] += step_loss
            window["steps"] += 1
            window["tokens"] += step_tokens * world_size
            bar.update(1)
            if state["global_step"] % cfg["logging_steps"] == 0 or state["global_step"] == max_steps:
                elapsed = time.time() - window["start"]
                record = {
                    "step": state["global_step"],
                    "epoch": round(state["global_step"] / steps_per_epoch, 4),
                    "loss": window["loss"] / window["steps"],
                    "lr": lr,
                    "tokens_per_s": round(window["tokens"] / max(elapsed, 1e-9), 1),
                }
                append_jsonl(train_log, record)
                report(run, {"train/loss": record["loss"], "train/lr": lr, "train/tokens_per_s": record["tokens_per_s"]}, record["step"])
                bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{lr:.2e}")
                log(f"step {record['step']}/{max_steps} loss {record['loss']:.4f} lr {lr:.3e} {record['tokens_per_s']:.0f} tok/s")
                window = {"loss": 0.0, "steps": 0, "tokens": 0, "start": time.time()}

            # stop check: a signal saves where we are and exits cleanly
            if broadcast_flag(stop.signum is not None):
                save(state["global_step"])
                bar.close()
                log(f"stopped by signal at step {state['global_step']}; resume with --resume_from_checkpoint=auto")
                raise SystemExit(128 + (stop.signum or signal.SIGTERM))
    bar.close()
    write_param_digest(model, rank)
    if run is not None:
        run.summary.update({"best_" + str(task.metric_for_best): state["best_metric"]})
        run.finish()
    return state


def write_param_digest(model, rank):
    """Test hook: with PADDLE_FINETUNE_PARAM_DIGEST=DIR each rank writes a checksum of its weights,
    so a test can check that data-parallel ranks end with identical parameters."""
    directory = os.environ.get("PADDLE_FINETUNE_PARAM_DIGEST")
    if not directory:
        return
    import hashlib

    state = unwrap_model(model).state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(state[name].numpy()).tobytes())
    os.makedirs(directory, exist_ok=True)
    write_json_atomic(os.path.join(directory, f"rank{rank}.json"), {"rank": rank, "sha256": digest.hexdigest()})


def describe_config(config):
    log("config:\n" + pprint.pformat(config, sort_dicts=False, width=110))
