"""Every speed patch in one place (issue #7), applied explicitly by the engine behind `fast_kernels`.

Process setup on CPU (`setup_cpu_process`, called by train_utils.setup_device before any math):
* MKL_DEBUG_CPU_TYPE: paddle's bundled MKL 2019 takes a generic path on AMD CPUs; told the CPU type,
  it uses the AVX-512 or AVX2 kernels the CPU has. MKL reads it at its first call, not at import.
* glibc mallopt: freed memory stays in the heap instead of being handed back (and faulted in again);
  `release_free_memory` hands it back when evaluation starts and ends.
* paddle 3's strided views off: every CPU matmul on a transposed view re-gathered its input.

Layer patches (`use_fast_cpu_kernels`, on CPU, in training): same math as paddle's layers, faster.
Each patched layer's class is swapped for a subclass with its own `forward`, so a `copy.deepcopy`
of a patched model is patched too and computes with its own weights.

Generation (`fast_beam_search`): the cross-attention cache stays in place when beams are reordered,
and BeamSearchScorer's bookkeeping runs on numpy copies.

Each patch names the library versions it was written against (WRITTEN_FOR); outside them it is
skipped, with one log line, and the library's own code runs. tests/test_speedups.py checks every
patch against the code it replaces.

Modules: `versions` (which library versions each patch was written for), `process` (CPU process setup),
`layers` (the layer patches) and `generation` (beam search).

Imports: numpy, `runtime.rng` (the dropout generator) and `reporting` (the log line); paddle and paddlenlp
inside the functions.
"""
from paddle_finetune.speedups import native  # noqa: F401
from paddle_finetune.speedups.generation import fast_beam_search  # noqa: F401
from paddle_finetune.speedups.layers import use_fast_cpu_kernels  # noqa: F401
from paddle_finetune.speedups.process import release_free_memory, setup_cpu_process  # noqa: F401
from paddle_finetune.speedups.versions import WRITTEN_FOR, version_supported  # noqa: F401
