"""The compiled CPU kernels (speedups.native, speedups.fused) against paddle's own ops: values and gradients.

* pf_bias_gelu, pf_add_norm, pf_dropout: paddle's gelu / layer_norm / dropout formula on the same inputs (and, with
  dropout, on the kernel's own mask, recomputed here from its seed by the same hash);
* pf_self_attention / pf_cross_attention: nn.MultiHeadAttention's math with padding, causal and no masks, head dims
  that are and are not multiples of 16, more queries than one block, attention dropout;
* the generation-step kernels: paddle's decoder layer with its caches, step by step, same outputs and caches;
* the fused encoder and decoder layers: paddle's layers' outputs and every parameter's gradient;
* results that do not depend on the thread count; a build without a compiler that falls back with one log line;
  a second process that loads from the cache instead of compiling.
"""
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paddle_finetune.speedups import native

pytestmark = pytest.mark.skipif(native.unsupported_reason() is not None, reason="no compiled kernels on this platform")


@pytest.fixture(scope="module")
def ops():
    import paddle

    paddle.set_device("cpu")
    module = native.ops()
    assert module is not None, "the kernels did not build (see the log line above)"
    return module


def _t(a, grad=True):
    import paddle

    t = paddle.to_tensor(np.asarray(a, dtype="float32"))
    t.stop_gradient = not grad
    return t


def _close(a, b, rtol=1e-5, atol=1e-5, what=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


def _mix32(x):
    x = np.asarray(x, dtype=np.uint32)
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def dropout_factors(seed, p, count, base=0):
    """kernels/common.h's Dropout.factor for indices base .. base + count - 1, in numpy."""
    index = np.arange(base, base + count, dtype=np.uint64)
    k0 = _mix32(np.uint32(seed & 0xFFFFFFFF) ^ np.uint32(0x9E3779B9))
    k1 = _mix32(np.uint32(seed >> 32) ^ np.uint32(0x85EBCA6B))
    h = _mix32((index & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ k0)
    h = _mix32(h + ((index >> np.uint64(32)).astype(np.uint32) ^ k1))
    keep = (h >> np.uint32(8)) >= np.uint32(round(p * 16777216))
    return np.where(keep, np.float32(1.0 / (1.0 - p)), np.float32(0.0)).astype(np.float32)


# ---------------------------------------------------------------------------- elementwise kernels
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_bias_gelu_is_paddles_gelu_of_x_plus_bias(ops, p):
    import paddle.nn.functional as F

    rng = np.random.default_rng(0)
    x, b, g = rng.standard_normal((70, 48)) * 3, rng.standard_normal(48), rng.standard_normal((70, 48))
    seed = 1234567890123
    xt, bt = _t(x), _t(b)
    out = ops.pf_bias_gelu(xt, bt, p, seed)
    (out * _t(g, False)).sum().backward()
    xr, br = _t(x), _t(b)
    mask = _t(dropout_factors(seed, p, x.size).reshape(x.shape), False) if p else 1.0
    ref = F.gelu(xr + br) * mask
    (ref * _t(g, False)).sum().backward()
    _close(out.numpy(), ref.numpy(), what="out")
    _close(xt.grad.numpy(), xr.grad.numpy(), what="dx")
    _close(bt.grad.numpy(), br.grad.numpy(), rtol=1e-4, atol=1e-4, what="dbias")
    if p:
        assert abs((out.numpy() != 0).mean() - (1 - p)) < 0.05


@pytest.mark.parametrize("p", [0.0, 0.2])
def test_add_norm_is_layer_norm_of_residual_plus_dropout(ops, p):
    import paddle.nn.functional as F

    rng = np.random.default_rng(1)
    n, d = 90, 40
    x, b, r = rng.standard_normal((n, d)), rng.standard_normal(d), rng.standard_normal((n, d)) + 2
    gamma, beta, g = rng.standard_normal(d), rng.standard_normal(d), rng.standard_normal((n, d))
    seed = 99
    ours = [_t(v) for v in (x, b, r, gamma, beta)]
    out = ops.pf_add_norm(*ours, 1e-5, p, seed)[0]
    (out * _t(g, False)).sum().backward()
    ref_in = [_t(v) for v in (x, b, r, gamma, beta)]
    mask = _t(dropout_factors(seed, p, n * d).reshape(n, d), False) if p else 1.0
    ref = F.layer_norm(ref_in[2] + (ref_in[0] + ref_in[1]) * mask, [d], weight=ref_in[3], bias=ref_in[4], epsilon=1e-5)
    (ref * _t(g, False)).sum().backward()
    _close(out.numpy(), ref.numpy(), what="out")
    for name, a, c in zip(("x", "bias", "residual", "gamma", "beta"), ours, ref_in):
        _close(a.grad.numpy(), c.grad.numpy(), rtol=1e-4, atol=1e-4, what=name)


@settings(max_examples=15, deadline=None)
@given(shape=st.sampled_from([(1, 1), (7, 3), (90, 40), (2, 65, 33), (3, 4, 5, 17)]), shift=st.floats(-50, 50),
       epsilon=st.sampled_from([1e-5, 1e-12, 1e-3]), seed=st.integers(0, 2**31))
def test_layer_norm_is_paddles_layer_norm(ops, shape, shift, epsilon, seed):
    import paddle.nn.functional as F

    rng = np.random.default_rng(seed)
    d = shape[-1]
    x, g = rng.standard_normal(shape) * 3 + shift, rng.standard_normal(shape)
    gamma, beta = rng.standard_normal(d), rng.standard_normal(d)
    ours, ref_in = [_t(v) for v in (x, gamma, beta)], [_t(v) for v in (x, gamma, beta)]
    out = ops.pf_layer_norm(*ours, epsilon)[0]
    (out * _t(g, False)).sum().backward()
    ref = F.layer_norm(ref_in[0], [d], weight=ref_in[1], bias=ref_in[2], epsilon=epsilon)
    (ref * _t(g, False)).sum().backward()
    assert list(out.shape) == list(shape)
    _close(out.numpy(), ref.numpy(), rtol=1e-4, atol=1e-4, what="out")
    for name, a, c in zip(("x", "gamma", "beta"), ours, ref_in):
        _close(a.grad.numpy(), c.grad.numpy(), rtol=1e-3, atol=1e-3, what=name)


def test_dropout_mask_is_a_function_of_its_seed(ops):
    x = _t(np.ones((300, 200)))
    out = ops.pf_dropout(x, 0.1, 5)
    out.sum().backward()
    expected = dropout_factors(5, 0.1, 300 * 200).reshape(300, 200)
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(x.grad.numpy(), expected)  # the backward recomputes the same mask
    assert abs((expected != 0).mean() - 0.9) < 5 * np.sqrt(0.09 / expected.size)
    assert not np.array_equal(ops.pf_dropout(x, 0.1, 6).numpy(), expected)


# ---------------------------------------------------------------------------- attention
def _reference_attention(q, k, v, heads, mask=None, drop=None):
    """nn.MultiHeadAttention's math on projected q [B, Lq, E], k, v [B, Lk, E]; drop: [B, H, Lq, Lk] factors."""
    import paddle
    import paddle.nn.functional as F

    b, lq, e = q.shape
    dh = e // heads
    q, k, v = (t.reshape([b, -1, heads, dh]).transpose([0, 2, 1, 3]) for t in (q, k, v))
    scores = paddle.matmul(q * dh ** -0.5, k, transpose_y=True)
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores)
    if drop is not None:
        weights = weights * drop
    return paddle.matmul(weights, v).transpose([0, 2, 1, 3]).reshape([b, lq, e])


def _masks(b, lq, lk, kind):
    if kind == "padding":
        mask = np.zeros((b, 1, 1, lk), "float32")
        for i in range(b):
            mask[i, 0, 0, lk - 3 * i:] = -1e4
        return mask
    if kind == "causal":
        return np.triu(np.full((lq, lk), -np.inf, "float32"), 1).reshape(1, 1, lq, lk)
    return np.zeros((1, 1, 1, 1), "float32")


@pytest.mark.parametrize("batch, length, heads, head_dim", [(3, 9, 2, 8), (2, 130, 3, 20), (2, 70, 2, 64)])
@pytest.mark.parametrize("kind", ["padding", "causal", "none"])
def test_self_attention_is_paddles_attention(ops, batch, length, heads, head_dim, kind):
    rng = np.random.default_rng(2)
    e = heads * head_dim
    qkv, bias, g = rng.standard_normal((batch, length, 3 * e)), rng.standard_normal(3 * e) * 0.2, rng.standard_normal((batch, length, e))
    mask = _masks(batch, length, length, kind)
    a, ab = _t(qkv), _t(bias)
    out, _ = ops.pf_self_attention(a, ab, _t(mask, False), heads, 0.0, 0)
    (out * _t(g, False)).sum().backward()
    ra, rb = _t(qkv), _t(bias)
    z = ra + rb
    ref = _reference_attention(z[:, :, :e], z[:, :, e:2 * e], z[:, :, 2 * e:], heads, None if kind == "none" else _t(mask, False))
    (ref * _t(g, False)).sum().backward()
    _close(out.numpy(), ref.numpy(), what="out")
    _close(a.grad.numpy(), ra.grad.numpy(), rtol=1e-4, atol=1e-5, what="dqkv")
    _close(ab.grad.numpy(), rb.grad.numpy(), rtol=1e-4, atol=1e-4, what="dbias")


def test_cross_attention_with_dropout_is_paddles_attention_on_the_same_mask(ops):
    rng = np.random.default_rng(3)
    batch, lq, lk, heads, dh, p, seed = 2, 11, 37, 2, 16, 0.25, 2024
    e = heads * dh
    q, qb, kv, kvb = rng.standard_normal((batch, lq, e)), rng.standard_normal(e), rng.standard_normal((batch, lk, 2 * e)), rng.standard_normal(2 * e)
    g, mask = rng.standard_normal((batch, lq, e)), _masks(batch, lq, lk, "padding")
    ours = [_t(v) for v in (q, qb, kv, kvb)]
    out, _ = ops.pf_cross_attention(*ours, _t(mask, False), heads, p, seed)
    (out * _t(g, False)).sum().backward()
    ref_in = [_t(v) for v in (q, qb, kv, kvb)]
    zq, zkv = ref_in[0] + ref_in[1], ref_in[2] + ref_in[3]
    drop = _t(dropout_factors(seed, p, batch * heads * lq * lk).reshape(batch, heads, lq, lk), False)
    ref = _reference_attention(zq, zkv[:, :, :e], zkv[:, :, e:], heads, _t(mask, False), drop)
    (ref * _t(g, False)).sum().backward()
    _close(out.numpy(), ref.numpy(), what="out")
    for name, a, c in zip(("q", "q bias", "kv", "kv bias"), ours, ref_in):
        _close(a.grad.numpy(), c.grad.numpy(), rtol=1e-4, atol=1e-5, what=name)


def test_kernels_give_the_same_bits_on_one_thread_and_two(ops):
    rng = np.random.default_rng(4)
    qkv, bias, g = rng.standard_normal((4, 50, 96)), rng.standard_normal(96), rng.standard_normal((4, 50, 32))
    x, r, gamma = rng.standard_normal((200, 32)), rng.standard_normal((200, 32)), rng.standard_normal(32)
    runs = []
    for threads in (1, 2):
        native.set_threads(threads)
        a, ab, xt, gt = _t(qkv), _t(bias), _t(x), _t(gamma)
        out, _ = ops.pf_self_attention(a, ab, _t(_masks(4, 50, 50, "padding"), False), 2, 0.1, 7)
        y = ops.pf_add_norm(xt, _t(gamma), _t(r), gt, _t(gamma), 1e-5, 0.1, 8)[0]
        rt, gt2 = _t(r), _t(gamma)
        z = ops.pf_layer_norm(rt, gt2, _t(gamma), 1e-5)[0]
        ((out * _t(g, False)).sum() + y.sum() + (z * _t(x, False)).sum()).backward()
        runs.append([t.numpy() for t in (out, a.grad, ab.grad, y, xt.grad, gt.grad, z, rt.grad, gt2.grad)])
    native.set_threads(2)
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)


@settings(max_examples=40, deadline=None)
@given(iterations=st.integers(0, 3000), threads=st.integers(1, 4))
def test_every_parallel_loop_gives_each_iteration_to_one_thread(ops, iterations, threads):
    lib = native._state["lib"]
    try:
        lib.pf_set_threads(threads)
        assert lib.pf_parallel_iterations(iterations) == 3 * iterations
    finally:
        native.set_threads(2)


class _LoopsRunEverywhere:
    """A kernel library whose OpenMP runtime gives every thread every iteration (GCC's nonmonotonic dynamic
    schedule on paddle's libiomp5, before the kernels asked for monotonic)."""

    def __init__(self):
        self.threads = 1

    def pf_set_threads(self, n):
        self.threads = n

    def pf_parallel_iterations(self, n):
        return 3 * n * self.threads


def test_loops_that_do_not_split_run_on_one_thread_after_one_log_line(ops, capsys):
    assert native.loops_split(native._state["lib"]) and native.kernel_threads() == native._state["threads"]
    saved = native._state["parallel_ok"]
    try:
        native._state["parallel_ok"] = native.loops_split(_LoopsRunEverywhere())
        captured = capsys.readouterr()
        lines = [ln for ln in (captured.out + captured.err).splitlines() if "OpenMP runtime ran" in ln]
        assert native._state["parallel_ok"] is False and len(lines) == 1 and "one thread" in lines[0]
        native.set_threads(2)
        assert native.kernel_threads() == 1 and native._state["lib"].pf_get_threads() == 1
    finally:
        native._state["parallel_ok"] = saved
        native.set_threads(2)


# ---------------------------------------------------------------------------- the fused layers
def _layers(kind, dropout=0.0):
    import paddle

    paddle.seed(5)
    if kind == "encoder":
        layer = paddle.nn.TransformerEncoderLayer(48, 4, 96, dropout=dropout, activation="gelu", attn_dropout=dropout,
                                                  act_dropout=dropout)
    else:
        layer = paddle.nn.TransformerDecoderLayer(48, 4, 96, dropout=dropout, activation="gelu", attn_dropout=dropout,
                                                  act_dropout=dropout)
    return layer, copy.deepcopy(layer)


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_fused_layers_give_paddles_outputs_and_gradients(ops, kind):
    import paddle

    from paddle_finetune.speedups.layers import use_fast_cpu_kernels

    ref, fast = _layers(kind)
    counts = use_fast_cpu_kernels(fast)
    assert counts[f"{kind}_layer"] == 1
    rng = np.random.default_rng(6)
    x, memory = rng.standard_normal((3, 13, 48)), rng.standard_normal((3, 17, 48))
    pad = _t(_masks(3, 1, 17 if kind == "decoder" else 13, "padding"), False)
    causal = _t(_masks(3, 13, 13, "causal"), False)
    outs = []
    for layer in (ref, fast):
        layer.train()
        xt, mt = _t(x), _t(memory)
        out = layer(xt, pad) if kind == "encoder" else layer(xt, mt, causal.reshape([13, 13]), pad)
        (out * out).sum().backward()
        outs.append((out.numpy(), xt.grad.numpy(), None if kind == "encoder" else mt.grad.numpy(),
                     {n: p.grad.numpy() for n, p in layer.named_parameters()}))
    _close(outs[1][0], outs[0][0], what="out")
    _close(outs[1][1], outs[0][1], rtol=1e-4, atol=1e-4, what="d input")
    if kind == "decoder":
        _close(outs[1][2], outs[0][2], rtol=1e-4, atol=1e-4, what="d memory")
    for name, grad in outs[0][3].items():
        _close(outs[1][3][name], grad, rtol=1e-4, atol=1e-4, what=name)
    with paddle.no_grad():
        ref.eval()
        fast.eval()
        xt = _t(x, False)
        args = (xt, pad) if kind == "encoder" else (xt, _t(memory, False), causal.reshape([13, 13]), pad)
        _close(fast(*args).numpy(), ref(*args).numpy(), what="eval")


def test_generation_steps_give_paddles_outputs_and_caches(ops):
    import paddle

    from paddle_finetune.speedups.layers import use_fast_cpu_kernels

    ref, fast = _layers("decoder", dropout=0.1)
    use_fast_cpu_kernels(fast)
    ref.eval()
    fast.eval()
    rng = np.random.default_rng(7)
    memory, pad = _t(rng.standard_normal((3, 17, 48)), False), _t(_masks(3, 1, 17, "padding"), False)
    with paddle.no_grad():
        caches = [layer.gen_cache(memory) for layer in (ref, fast)]
        for step in range(4):
            x = _t(rng.standard_normal((3, 1, 48)), False)
            zero = paddle.zeros([1, 1], "float32")  # BART's tgt_mask for one new position
            (out_ref, cache_ref), (out_fast, cache_fast) = (layer(x, memory, zero, pad, cache)
                                                            for layer, cache in zip((ref, fast), caches))
            _close(out_fast.numpy(), out_ref.numpy(), what=f"step {step}")
            _close(cache_fast[0].k.numpy(), cache_ref[0].k.numpy(), what="k cache")
            _close(cache_fast[0].v.numpy(), cache_ref[0].v.numpy(), what="v cache")
            assert type(cache_fast[0]) is type(cache_ref[0]) and cache_fast[1] is caches[1][1]
            caches = [cache_ref, cache_fast]


# ---------------------------------------------------------------------------- building, caching, falling back
PROBE = """
import paddle
from paddle_finetune.speedups import native
from paddle_finetune.reporting.console import log
print("ops:", native.ops() is not None)
"""


def _probe(env):
    return subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=600, env=env)


def test_without_a_compiler_paddles_ops_run_after_one_log_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path), "PADDLE_FINETUNE_CACHE": str(tmp_path / "cache")}
    result = _probe(env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ops: False" in result.stdout
    lines = [ln for ln in result.stdout.splitlines() if "compiled CPU kernels unavailable" in ln]
    assert len(lines) == 1 and "no C++ compiler" in lines[0]


def test_a_second_process_loads_the_kernels_from_the_cache(ops):
    result = _probe(dict(os.environ))  # the cache this test session built (or found) above
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ops: True" in result.stdout and "compiling" not in result.stdout


def test_build_key_follows_sources_cpu_and_paddle():
    libs = "/nonexistent"
    key = native.build_key("3.3.1", libs, flags=("avx2", "fma"))
    assert key == native.build_key("3.3.1", libs, flags=("avx2", "fma"))
    assert key != native.build_key("2.6.2", libs, flags=("avx2", "fma"))
    assert key != native.build_key("3.3.1", libs, flags=("avx2", "avx512f", "fma"))
