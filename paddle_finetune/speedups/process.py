"""Process setup on CPU, before the first matrix multiply: MKL's CPU type on AMD, glibc's heap policy, and
paddle 3's strided views off.

Imports: the standard library; paddle inside; of the project `speedups.versions`.
"""
import os
import re

from paddle_finetune.speedups.versions import _supported


def mkl_cpu_type(cpuinfo_path="/proc/cpuinfo"):
    """The MKL_DEBUG_CPU_TYPE for this CPU, or None to leave MKL alone.

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


def set_mkl_cpu_type():
    """Point MKL at this CPU's vector path (a user's own MKL_DEBUG_CPU_TYPE wins). Must run before the
    process's first matrix multiply: MKL reads the variable when it first dispatches."""
    if "MKL_DEBUG_CPU_TYPE" in os.environ:
        return os.environ["MKL_DEBUG_CPU_TYPE"]
    chosen = mkl_cpu_type()
    if chosen:
        os.environ["MKL_DEBUG_CPU_TYPE"] = chosen
    return chosen


def keep_freed_memory():
    """Stop glibc from handing big freed blocks back to the OS. Returns True when set.

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
    _heap["kept"] = bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, -1))
    return _heap["kept"]


_heap = {"kept": False}


def release_free_memory():
    """At a change of phase (training to evaluation and back), give the heap's free pages back to the OS
    (glibc's malloc_trim), when keep_freed_memory set the policy. Returns True when it trimmed.

    A training step allocates the same sizes step after step, so the blocks it freed fit the next one. Generation
    allocates other sizes (beams, self-attention caches one token longer at each step), which fit badly into
    training's free blocks: without a trim the heap grew past training's peak. Measured with tools/benchmark.py
    (small BART, Intel host), a trim around generation took peak RSS from 2145 to 1978 MB. Training's speed was
    unchanged, because the first steps after a trim fault their pages in once. Called twice per evaluation, never
    inside a training step.
    """
    if not _heap["kept"]:
        return False
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def setup_cpu_process():
    """The process-wide CPU settings above. Returns what was set, for the log."""
    import paddle

    done = {"mkl_cpu_type": set_mkl_cpu_type(), "keep_freed_memory": keep_freed_memory()}
    if _supported("paddle"):
        # Paddle 3's strided views (transpose without a copy) make every later CPU matmul on them re-gather
        # its input: 24 ms instead of 0.3 ms for cross-attention against cached keys, 2-3x on training attention.
        try:
            paddle.set_flags({"FLAGS_use_stride_kernel": False})
            done["stride_kernels"] = False
        except (ValueError, RuntimeError):  # a build without the flag has no strided views either
            pass
    return done
