"""Every speed patch in one place (issue #7), applied explicitly by the engine behind `fast_kernels`.

Process setup on CPU (`setup_cpu_process`, called by train_utils.setup_device before any math):
* MKL_DEBUG_CPU_TYPE: paddle's bundled MKL 2019 takes a generic path on AMD CPUs; told the CPU type,
  it uses the AVX-512 or AVX2 kernels the CPU has. MKL reads it at its first call, not at import.
* glibc mallopt: freed memory stays in the heap instead of being handed back (and faulted in again).
* paddle 3's strided views off: every CPU matmul on a transposed view re-gathered its input.

Layer patches (`use_fast_cpu_kernels`, on CPU, in training): same math as paddle's layers, faster.
Each patched layer's class is swapped for a subclass with its own `forward`, so a `copy.deepcopy`
of a patched model is patched too and computes with its own weights.

Generation (`fast_beam_search`): the cross-attention cache stays in place when beams are reordered,
and BeamSearchScorer's bookkeeping runs on numpy copies.

Each patch names the library versions it was written against (WRITTEN_FOR); outside them it is
skipped, with one log line, and the library's own code runs. tests/test_speedups.py checks every
patch against the code it replaces.

Imports: numpy, `rng` (the dropout generator) and `reporting` (the log line); paddle and paddlenlp
inside the functions.
"""
import contextlib
import os
import re

import numpy as np

import rng
from reporting import log

# (first, last) major.minor each group of patches was written and tested against.
WRITTEN_FOR = {"paddle": ((2, 6), (3, 3)), "paddlenlp": ((2, 8), (2, 8))}


def _major_minor(version):
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_supported(package, version=None):
    """Whether `package` (paddle or paddlenlp) is a version the patches for it were written for.

    Development builds ("0.0.0") are not assumed to be compatible.
    """
    if version is None:
        version = __import__(package).__version__
    found = _major_minor(version)
    first, last = WRITTEN_FOR[package]
    return found is not None and first <= found <= last


_skipped = set()


def _supported(package):
    ok = version_supported(package)
    if not ok and package not in _skipped:
        _skipped.add(package)
        first, last = WRITTEN_FOR[package]
        log(f"fast_kernels: {package} {__import__(package).__version__} is outside the versions these patches were "
            f"written for ({first[0]}.{first[1]}-{last[0]}.{last[1]}); using {package}'s own code")
    return ok


# ----------------------------------------------------------------------------
# process setup (CPU)
# ----------------------------------------------------------------------------
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
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30)) and bool(libc.mallopt(m_trim_threshold, -1))


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


# ----------------------------------------------------------------------------
# layer patches: same math as paddle's layers, faster on CPU in training
# ----------------------------------------------------------------------------
def _training_in_fp32(x, weight):
    import paddle

    return paddle.is_grad_enabled() and not weight.stop_gradient and x.dtype == paddle.float32


def _build_fast_classes():
    """The patched layer classes (and their PyLayers), built on first use so that importing this module does
    not import paddle."""
    import paddle
    import paddle.nn.functional as F
    from paddle.autograd import PyLayer

    class LinearFunction(PyLayer):
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

    class LayerNormFunction(PyLayer):
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

    class FastLinear(paddle.nn.Linear):
        def forward(self, x):
            if _training_in_fp32(x, self.weight):
                return LinearFunction.apply(x, self.weight, self.bias)
            return F.linear(x, self.weight, self.bias)

    class FastLayerNorm(paddle.nn.LayerNorm):
        def forward(self, x):
            if _training_in_fp32(x, self.weight):
                return LayerNormFunction.apply(x, self.weight, self.bias, self._epsilon)
            return super().forward(x)

    class FastDropout(paddle.nn.Dropout):
        """Masks from numpy's PCG64: paddle's CPU dropout draws from mt19937 at 12.7 ms for 6400x256
        (3.1 ms this way). Same distribution and upscale_in_train scaling; the stream is rng.dropout_rng's."""

        def forward(self, x):
            if not self.training or self.p == 0.0:  # the identity, without an op call per layer per decoding step
                return x
            if self.p < 1.0 and x.dtype == paddle.float32:
                keep = rng.dropout_rng.random(x.shape, dtype=np.float32) >= np.float32(self.p)
                scale = np.multiply(keep, np.float32(1.0 / (1.0 - self.p)), dtype=np.float32)
                return x * paddle.to_tensor(scale, place=x.place)
            return super().forward(x)

    class FastMultiHeadAttention(paddle.nn.MultiHeadAttention):
        """Expands a broadcast additive mask to the score shape before paddle's attention adds it:
        its CPU add of a [B,1,1,S] mask to [B,H,S,S] scores takes 15.8 ms; expand + add 1.2 ms."""

        def forward(self, query, key=None, value=None, attn_mask=None, cache=None):
            if attn_mask is not None and cache is None and attn_mask.dtype == query.dtype and attn_mask.ndim == 4:
                key_length = (query if key is None else key).shape[1]
                shape = [query.shape[0], self.num_heads, query.shape[1], key_length]
                if list(attn_mask.shape) != shape:
                    attn_mask = paddle.expand(attn_mask, shape)
            return super().forward(query, key, value, attn_mask, cache)

    return {"linear": FastLinear, "layer_norm": FastLayerNorm, "dropout": FastDropout, "attention": FastMultiHeadAttention}


def _build_fast_bart_positions():
    import paddle
    from paddlenlp.transformers.bart.modeling import BartLearnedPositionalEmbedding

    class FastBartPositions(BartLearnedPositionalEmbedding):
        """BART's learned positions as a [batch, length] lookup while training: the [length, d_model] table
        slice broadcast over the batch had a gradient that is a CPU reduce_sum over the batch (8 ms for
        32x200x256); as a lookup it is an embedding gradient (scatter-add) and a same-shape add."""

        def forward(self, input_ids_shape, past_key_values_length=0):
            if not paddle.is_grad_enabled() or self.weight.stop_gradient:
                return super().forward(input_ids_shape, past_key_values_length)
            batch, length = input_ids_shape[:2]
            start = past_key_values_length + self.offset
            positions = paddle.arange(start, start + length, dtype="int64")
            return paddle.nn.functional.embedding(positions.unsqueeze(0).expand([batch, length]), self.weight)

    return FastBartPositions


_classes = {}


def fast_classes():
    if not _classes:
        _classes.update(_build_fast_classes())
        if version_supported("paddlenlp"):
            _classes["positions"] = _build_fast_bart_positions()
    return _classes


# Which instances of each patched class the patch covers: the math above assumes these settings.
PATCHABLE = {
    "linear": lambda layer: layer.bias is not None,
    "layer_norm": lambda layer: layer.weight is not None and layer.bias is not None and len(layer._normalized_shape) == 1,
    "dropout": lambda layer: layer.axis is None and layer.mode == "upscale_in_train",
    "attention": lambda layer: True,
    "positions": lambda layer: hasattr(layer, "offset"),
}


def use_fast_cpu_kernels(model):
    """On CPU, swap slow paddle kernels in `model`'s layers for faster ones with the same math.

    * biased nn.Linear and nn.LayerNorm: PyLayers with cheaper backwards, while gradients are on;
    * nn.Dropout (upscale_in_train): masks drawn by numpy in training, no op at all in eval;
    * nn.MultiHeadAttention: broadcast additive masks expanded first;
    * BART's learned positions: a per-example lookup while training (paddlenlp 2.8).
    Inference keeps paddle's own linear and layer norm. Returns {kind: layers switched}.
    """
    import paddle

    counts = {"linear": 0, "layer_norm": 0, "dropout": 0, "attention": 0, "positions": 0}
    if not paddle.get_device().startswith("cpu") or not _supported("paddle"):
        return counts
    fast_by_base = {fast.__bases__[0]: (name, fast) for name, fast in fast_classes().items()}
    if "positions" not in fast_classes():
        _supported("paddlenlp")  # says once why BART positions stay as they are
    for layer in model.sublayers(include_self=True):
        name, fast = fast_by_base.get(type(layer), (None, None))
        if fast is not None and PATCHABLE[name](layer):
            layer.__class__ = fast
            counts[name] += 1
    return counts


# ----------------------------------------------------------------------------
# beam search (paddlenlp 2.8's generation utils)
# ----------------------------------------------------------------------------
def reorder_beam_cache(cache, beam_idx):
    """Beam-search cache reorder that moves only the self-attention keys/values.

    paddlenlp's reorder_cache index_selects every cached tensor, including the cross-attention
    StaticCache (batch*beams x heads x source_len x head_dim per layer). Beams only move within their
    own example, and all beams of an example share the same encoder keys and values, so the static
    cache can stay as it is (Hugging Face's BART does the same). That was 45% of beam-4 generation time.
    The ids are unchanged; a test checks this.
    """
    import paddle
    from paddle.nn import MultiHeadAttention

    return [
        tuple(type(c)(*(paddle.index_select(t, beam_idx) for t in c)) if isinstance(c, MultiHeadAttention.Cache) else c for c in layer)
        for layer in cache
    ]


def beam_scorer_process(self, input_ids, next_scores, next_tokens, next_indices, origin_len=0, pad_token_id=None, eos_token_id=None):
    """paddlenlp's BeamSearchScorer.process with its bookkeeping on numpy copies.

    The original reads every candidate with a tensor .item() and writes every kept one with a tensor
    __setitem__: 18% of beam-4 generation time on CPU, and a device sync per candidate on GPU.
    This is the same loop, in the same order and on the same float32 values, over three .numpy() copies.
    """
    import paddle

    if next_scores.dtype not in (paddle.float32, paddle.float64):  # bf16 has no numpy view: paddlenlp's own loop
        return _PADDLENLP_BEAM_PROCESS(self, input_ids, next_scores, next_tokens, next_indices, origin_len, pad_token_id, eos_token_id)
    cur_len = input_ids.shape[-1]
    batch_size, group = len(self._beam_hyps), self.group_size
    scores, tokens, indices = next_scores.numpy(), next_tokens.numpy(), next_indices.numpy()
    done = self._done.numpy().copy()
    beam_scores = np.zeros([batch_size, group], scores.dtype)
    beam_tokens = np.zeros([batch_size, group], tokens.dtype)
    beam_indices = np.zeros([batch_size, group], indices.dtype)
    for batch_idx, beam_hyp in enumerate(self._beam_hyps):
        if done[batch_idx] == 1:
            if len(beam_hyp) < self.num_beams or eos_token_id is None or pad_token_id is None:
                raise ValueError(f"beam search: example {batch_idx} is done with {len(beam_hyp)} of {self.num_beams} beams "
                                 "or without eos/pad ids")
            beam_tokens[batch_idx, :] = pad_token_id
            continue
        beam_idx = 0
        candidates = zip(tokens[batch_idx].tolist(), scores[batch_idx].tolist(), indices[batch_idx].tolist())
        for rank, (token, score, index) in enumerate(candidates):
            batch_beam_idx = batch_idx * group + index
            if eos_token_id is not None and token == eos_token_id:
                if rank >= group:  # an eos outside the top num_beams candidates is not a finished hypothesis
                    continue
                beam_hyp.add(input_ids[batch_beam_idx].clone(), score, origin_len)
            else:
                beam_scores[batch_idx, beam_idx] = score
                beam_tokens[batch_idx, beam_idx] = token
                beam_indices[batch_idx, beam_idx] = batch_beam_idx
                beam_idx += 1
            if beam_idx == group:
                break
        if beam_idx < group:
            raise ValueError(f"At most {group} tokens in next_tokens[{batch_idx}] can be equal to eos_token_id {eos_token_id}")
        if beam_hyp.is_done(float(scores[batch_idx].max()), cur_len, origin_len):
            done[batch_idx] = 1
    self._done = paddle.to_tensor(done)
    return {"next_beam_scores": paddle.to_tensor(beam_scores.reshape([-1])),
            "next_beam_tokens": paddle.to_tensor(beam_tokens.reshape([-1])),
            "next_beam_indices": paddle.to_tensor(beam_indices.reshape([-1]))}


_PADDLENLP_BEAM_PROCESS = None


@contextlib.contextmanager
def fast_beam_search(model, enabled=True):
    """While generating: the self-attention-only cache reorder and the numpy beam bookkeeping.

    With enabled=False, or a paddlenlp these were not written for, paddlenlp's own code runs.
    """
    global _PADDLENLP_BEAM_PROCESS
    if not enabled or not _supported("paddlenlp"):
        yield
        return
    from paddlenlp.generation.utils import BeamSearchScorer

    if _PADDLENLP_BEAM_PROCESS is None:
        _PADDLENLP_BEAM_PROCESS = BeamSearchScorer.process
    last = []  # paddlenlp reorders the same cache twice a step (as "cache" and as "past_key_values")

    def reorder_once(cache, beam_idx):
        if not (last and last[0] is cache and last[1] is beam_idx):
            last[:] = [cache, beam_idx, reorder_beam_cache(cache, beam_idx)]
        return last[2]

    model.reorder_cache = reorder_once
    BeamSearchScorer.process = beam_scorer_process
    try:
        yield
    finally:
        BeamSearchScorer.process = _PADDLENLP_BEAM_PROCESS
        del model.reorder_cache
