"""The process environment a run starts from: what must happen before paddle is imported (the user's
OMP_NUM_THREADS recorded, zlib loaded first), the device (gpu, cpu or auto), the math threads per process, and
evaluation's reproducible matrix products on CPU.

Imports: the standard library; paddle inside the functions; of the project `errors`, `runtime.distributed`
and `speedups`.
"""
import contextlib
import importlib
import os
import sys
import tempfile

from paddle_finetune import speedups
from paddle_finetune.errors import ConfigError
from paddle_finetune.runtime import state
from paddle_finetune.runtime.distributed import get_local_world_size

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
        if fast_kernels:  # before the first matrix multiply: MKL reads its CPU type then
            speedups.setup_cpu_process()
        set_math_threads(cpu_threads())
    return chosen


_math_threads = {}


def set_math_threads(n):
    """paddle's math threads (MKL and OpenMP) and the compiled kernels' (speedups.native), remembered for
    evaluation_math to restore."""
    import paddle

    _math_threads["n"] = n
    paddle.base.core.set_num_threads(n)
    speedups.native.set_threads(n)


@contextlib.contextmanager
def evaluation_math():
    """While evaluating on CPU: matrix products on one MKL thread, so one process evaluates exactly as ranks with
    a share of the cores each (evaluation.sharding's promise), without taxing training.

    Paddle's bundled MKL splits some products differently by thread count: on this project's hosts 12 of 300
    (AMD EPYC) and 16 of 40 (Intel Xeon, Emerald Rapids) random [m, 1024] x [1024, n] float32 shapes differed
    by ~1e-5 between 1 and 2 threads, enough to flip a near-tie in greedy generation. MKL's strict conditional
    reproducibility (MKL_CBWR=AUTO,STRICT) fixes that too, but it can only be set before MKL's first call and then
    holds for the whole process: on the Xeon it made training's GEMMs 10-20% slower. A single MKL thread gives
    the same bits in every process layout on a CPU, for evaluation alone. The compiled kernels keep every thread:
    each output element of theirs is computed by one thread in a fixed order, whatever the thread count. With a
    user's own MKL_CBWR, or one math thread anyway, nothing changes.
    """
    import paddle

    if (not paddle.get_device().startswith("cpu") or os.environ.get("MKL_CBWR")
            or _math_threads.get("n", cpu_threads()) == 1):
        yield
        return
    paddle.base.core.set_num_threads(1)
    speedups.native.set_threads(_math_threads.get("n", cpu_threads()))
    try:
        yield
    finally:
        set_math_threads(_math_threads.get("n", cpu_threads()))


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


def staging_dir():
    """A temp dir for files a run makes before output_dir may change (e.g. a vocab built from the data); the run's
    own (runtime.state), removed when the run ends."""
    current = state.current()
    if current.staging_dir is None:
        current.staging_dir = tempfile.mkdtemp(prefix="paddle-finetune-")
    return current.staging_dir
