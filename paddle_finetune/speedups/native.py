"""The compiled CPU kernels (`speedups/kernels/*.cc`, paddle custom operators): built with paddle's
`cpp_extension` at first use, cached, and loaded from the cache afterwards.

The cache is a user cache dir (`$PADDLE_FINETUNE_CACHE`, else `$XDG_CACHE_HOME/paddle_finetune`, else
`~/.cache/paddle_finetune`), one folder per key: the sources' hash, the compiler flags, the paddle version, the
Python ABI and the CPU's instruction sets (the code is compiled for the CPU it runs on, `-march=native`). A
build runs in a child process (its compiler chatter stays out of the run's console), under a file lock (ranks
and parallel tests build once), into a temporary folder renamed into place when complete.

Without a C++ compiler, on a platform other than Linux x86-64, or when the build fails, `ops()` returns None
and says why in one log line; every caller then keeps paddle's own code.

Imports: the standard library; paddle inside the functions; of the project `reporting.console` and
`speedups.versions`.
"""
import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile

from paddle_finetune.reporting.console import log
from paddle_finetune.speedups.versions import _supported

NAME = "pf_kernels"
SOURCES = ("common.h", "elementwise.cc", "attention.cc", "decode.cc")
KERNEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels")
CXX_FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", "-std=c++17"]
BUILD_TIMEOUT_S = 900

_state = {"module": None, "tried": False, "threads": 1, "lib": None, "parallel_ok": True}


def cache_root():
    if os.environ.get("PADDLE_FINETUNE_CACHE"):
        return os.environ["PADDLE_FINETUNE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "paddle_finetune")


def cpu_flags(cpuinfo_path="/proc/cpuinfo"):
    """The instruction sets the CPU reports (the `flags` line), as a sorted tuple; () when unknown."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return tuple(sorted(line.partition(":")[2].split()))
    except OSError:
        pass
    return ()


def compile_flags(flags=None):
    flags = cpu_flags() if flags is None else flags
    # GCC vectorizes loops 256 bits wide on AVX-512 CPUs unless asked: the elementwise kernels gain from 512.
    return CXX_FLAGS + (["-mprefer-vector-width=512"] if "avx512f" in flags else [])


def link_flags(paddle_libs):
    """The kernels' OpenMP loops run on the OpenMP runtime MKL uses (paddle's bundled libiomp5) when there is one.
    With GCC's own (libgomp) beside it, each runtime's threads spin after their parallel regions while the other's
    work: measured, every small MKL GEMM of a generation step took 7.7 ms instead of 0.1 ms."""
    if os.path.isfile(os.path.join(paddle_libs, "libiomp5.so")):
        return [f"-L{paddle_libs}", "-liomp5"]
    return ["-fopenmp"]


def build_key(paddle_version, paddle_libs, flags=None):
    """The cache folder's name: a hash of everything the compiled library depends on."""
    flags = cpu_flags() if flags is None else flags
    h = hashlib.sha256()
    for name in SOURCES:
        with open(os.path.join(KERNEL_DIR, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    h.update(" ".join(compile_flags(flags) + link_flags(paddle_libs)).encode())
    h.update(f"paddle {paddle_version} python {sys.implementation.cache_tag} {platform.machine()}".encode())
    h.update(" ".join(flags).encode())
    return f"{NAME}-{h.hexdigest()[:16]}"


def unsupported_reason():
    """Why the kernels cannot be built here, or None."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the compiled kernels are built for Linux x86-64 only (this is {platform.system()} {platform.machine()})"
    if not (shutil.which("c++") or shutil.which("g++")):
        return "no C++ compiler (c++ or g++) on PATH"
    return None


@contextlib.contextmanager
def _locked(path):
    import fcntl

    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_BUILD_SCRIPT = """
import sys, zlib
from paddle.utils.cpp_extension import load
name, build_dir, cxx, ld = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
load(name=name, sources=sys.argv[5:], extra_cxx_cflags=cxx, extra_ldflags=ld, build_directory=build_dir, verbose=False)
"""


def _build(target, paddle_libs):
    """Compile into a temporary folder beside `target`, then rename it into place. Returns an error text or None."""
    parent = os.path.dirname(target)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(target) + ".tmp-", dir=parent)
    sources = [os.path.join(KERNEL_DIR, s) for s in SOURCES if s.endswith(".cc")]
    cmd = [sys.executable, "-c", _BUILD_SCRIPT, NAME, tmp, " ".join(compile_flags()), " ".join(link_flags(paddle_libs)), *sources]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=tmp)
    except (OSError, subprocess.SubprocessError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        return f"{type(e).__name__}: {e}"
    so = os.path.join(tmp, NAME, NAME + ".so")
    if proc.returncode != 0 or not os.path.isfile(so):
        shutil.rmtree(tmp, ignore_errors=True)
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if "error" in ln.lower()] or (proc.stderr or proc.stdout).splitlines()
        return (lines[-1] if lines else f"exit status {proc.returncode}").strip()[:300]
    os.rename(tmp, target)
    return None


def _import(folder):
    """Register the library's operators with paddle and return its Python module."""
    import logging

    from paddle.utils.cpp_extension import extension_utils

    chatter = logging.getLogger("utils.cpp_extension")  # "using custom operator only": expected, not news
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    try:
        module = extension_utils._import_module_from_library(NAME, os.path.join(folder, NAME), False)
    finally:
        chatter.setLevel(level)
    generated = getattr(module, "__file__", None)  # paddle writes a wrapper .py per import: ours is loaded, remove it
    if generated and generated.endswith(".py") and os.path.basename(generated).startswith(NAME + "_"):
        with contextlib.suppress(OSError):
            os.remove(generated)
    return module


def ops():
    """The compiled kernels' module (pf_self_attention, pf_cross_attention, pf_add_norm, pf_bias_gelu,
    pf_dropout), built on first use; None where they cannot be had (said once in the log)."""
    if _state["tried"]:
        return _state["module"]
    _state["tried"] = True
    import paddle

    reason = unsupported_reason()
    if reason is None and not _supported("paddle"):
        reason = "paddle version outside the kernels' tested range"
    if reason is None:
        try:
            root = os.path.join(cache_root(), "kernels")
            os.makedirs(root, exist_ok=True)
            paddle_libs = os.path.join(os.path.dirname(os.path.abspath(paddle.__file__)), "libs")
            target = os.path.join(root, build_key(paddle.__version__, paddle_libs))
            with _locked(target + ".lock"):
                if not os.path.isfile(os.path.join(target, NAME, NAME + ".so")):
                    log(f"fast_kernels: compiling the CPU kernels for this CPU and paddle {paddle.__version__} "
                        f"(once; about a minute) into {target}")
                    reason = _build(target, paddle_libs)
            if reason is None:
                _state["module"] = _import(target)
                _state["lib"] = ctypes.CDLL(os.path.join(target, NAME, NAME + ".so"))
                _state["lib"].pf_parallel_iterations.restype = ctypes.c_int64
                _state["lib"].pf_parallel_iterations.argtypes = [ctypes.c_int64]
                _state["parallel_ok"] = loops_split(_state["lib"])
                _state["lib"].pf_set_threads(kernel_threads())
        except Exception as e:  # noqa: BLE001 - any failure here means paddle's own ops, said once
            reason = f"{type(e).__name__}: {e}"
            _state["module"] = None
    if reason is not None:
        log(f"fast_kernels: compiled CPU kernels unavailable ({reason}); using paddle's own ops for attention, "
            "GELU, layer norm and dropout")
    return _state["module"]


def loops_split(lib, threads=2, iterations=64):
    """Whether the library's OpenMP loops give each iteration to one thread (False: every thread runs all of
    them, so more threads only repeat the work; one log line, and the kernels run on one thread)."""
    lib.pf_set_threads(threads)
    done = lib.pf_parallel_iterations(iterations)
    if done != 3 * iterations:
        log(f"fast_kernels: the OpenMP runtime ran {done} loop iterations for {3 * iterations} on {threads} threads; "
            "the compiled kernels run on one thread")
        return False
    return True


def kernel_threads():
    """The compiled kernels' thread count: the run's, or 1 when their loops do not split (loops_split)."""
    return int(_state["threads"]) if _state["parallel_ok"] else 1


def set_threads(n):
    """Math threads for the compiled kernels (the run's cpu_threads()); applied now if loaded, else at load."""
    _state["threads"] = max(1, int(n))
    if _state["lib"] is not None:
        _state["lib"].pf_set_threads(kernel_threads())


def reset_for_tests():
    """Forget a failed or skipped attempt, so a test can try again (a loaded library stays loaded)."""
    if _state["module"] is None:
        _state["tried"] = False
