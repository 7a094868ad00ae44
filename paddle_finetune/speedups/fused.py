"""Paddle's transformer layers on the compiled CPU kernels (`speedups.native`): the same math as
`nn.TransformerEncoderLayer` and `nn.TransformerDecoderLayer` (post-LN, GELU), in a third of the ops.

Per sub-layer, one 2-D GEMM per projection (q, k and v as one GEMM on their concatenated weights) and one fused
kernel for everything between GEMMs: attention with its biases, mask, softmax and dropout
(pf_self_attention / pf_cross_attention); bias + dropout + residual + LayerNorm (pf_add_norm); bias + GELU +
dropout (pf_bias_gelu). Paddle's layer runs ~30 ops per encoder layer, most of them slow on CPU (broadcast adds,
their reduce-sum gradients, reshapes, transposes, softmax); here there are 10. Attention never holds a
[batch, heads, length, length] tensor: its backward recomputes the probabilities block by block.

Dropout masks come from the kernels' counter-based hash of a seed drawn per call from `runtime.rng.dropout_rng`,
which checkpoints save: a resumed run and a recompute replay draw the same masks.

A layer the kernels do not cover (pre-LN, another activation, a cache during generation, need_weights, other
dtypes, a mask that does not broadcast) runs paddle's own forward.

Imports: numpy; paddle inside the functions; of the project `runtime.rng`.
"""
import numpy as np

from paddle_finetune.runtime import rng

_NO_MASK = {}


def draw_seed(p, training):
    """A fresh 63-bit seed for one dropout call, or 0 when nothing is dropped (no draw, so the stream is unchanged)."""
    if not training or p <= 0.0:
        return 0
    return int(rng.dropout_rng.integers(0, 2**63 - 1, dtype=np.int64))


def _p(dropout_layer, training):
    return float(dropout_layer.p) if training else 0.0


def mask_4d(mask, batch, heads, q_len, k_len):
    """paddle's additive attention mask as the kernels take it: float32, 4-D, each dim 1 or full; None when it
    does not broadcast that way (then paddle's own layer runs)."""
    import paddle
    from paddle.nn.layer.transformer import _convert_attention_mask

    if mask is None:
        if "zero" not in _NO_MASK:
            _NO_MASK["zero"] = paddle.zeros([1, 1, 1, 1], "float32")
        return _NO_MASK["zero"]
    mask = _convert_attention_mask(mask, paddle.float32)
    if mask.ndim > 4 or not mask.stop_gradient:
        return None
    shape = [1] * (4 - mask.ndim) + list(mask.shape)
    if any(s not in (1, full) for s, full in zip(shape, (batch, heads, q_len, k_len))):
        return None
    return mask.reshape(shape) if mask.ndim != 4 else mask


def _attention_ok(attn):
    return (not attn.need_weights and attn.kdim == attn.embed_dim and attn.vdim == attn.embed_dim
            and all(p.bias is not None for p in (attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj)))


def layer_supported(layer, kind):
    """Whether the fused forward covers this layer's configuration (checked once, when the layer is patched)."""
    import paddle.nn.functional as F

    if layer.normalize_before or layer.activation is not F.gelu:
        return False
    attns = [layer.self_attn] + ([layer.cross_attn] if kind == "decoder" else [])
    norms = [layer.norm1, layer.norm2] + ([layer.norm3] if kind == "decoder" else [])
    drops = [layer.dropout, layer.dropout1, layer.dropout2] + ([layer.dropout3] if kind == "decoder" else [])
    return (all(_attention_ok(a) for a in attns)
            and all(n.weight is not None and n.bias is not None and len(n._normalized_shape) == 1 for n in norms)
            and all(d.axis is None and d.mode == "upscale_in_train" for d in drops)
            and layer.linear1.bias is not None and layer.linear2.bias is not None)


def _qkv_weights(attn, parts):
    import paddle

    projections = [getattr(attn, f"{p}_proj") for p in parts]
    return (paddle.concat([p.weight for p in projections], axis=1), paddle.concat([p.bias for p in projections]))


def _add_norm(ops, x2, linear_weight, bias, residual2, norm, dropout, training):
    import paddle

    p = _p(dropout, training)
    out = ops.pf_add_norm(paddle.matmul(x2, linear_weight), bias, residual2, norm.weight, norm.bias, float(norm._epsilon), p,
                          draw_seed(p, training))
    return out[0]


def _feed_forward(ops, layer, x2, norm, dropout, training):
    import paddle

    p = _p(layer.dropout, training)
    hidden = ops.pf_bias_gelu(paddle.matmul(x2, layer.linear1.weight), layer.linear1.bias, p, draw_seed(p, training))
    hidden = hidden[0] if isinstance(hidden, (list, tuple)) else hidden
    return _add_norm(ops, hidden, layer.linear2.weight, layer.linear2.bias, x2, norm, dropout, training)


def _self_attention(ops, attn, x2, batch, length, mask):
    import paddle

    d = attn.embed_dim
    weight, bias = _qkv_weights(attn, ("q", "k", "v"))
    p = float(attn.dropout) if attn.training else 0.0
    out, _ = ops.pf_self_attention(paddle.matmul(x2, weight).reshape([batch, length, 3 * d]), bias, mask, attn.num_heads, p,
                                   draw_seed(p, attn.training))
    return out.reshape([batch * length, d])


def _cross_attention(ops, attn, x2, memory2, batch, q_len, k_len, mask):
    import paddle

    d = attn.embed_dim
    kv_weight, kv_bias = _qkv_weights(attn, ("k", "v"))
    q = paddle.matmul(x2, attn.q_proj.weight).reshape([batch, q_len, d])
    kv = paddle.matmul(memory2, kv_weight).reshape([batch, k_len, 2 * d])
    p = float(attn.dropout) if attn.training else 0.0
    out, _ = ops.pf_cross_attention(q, attn.q_proj.bias, kv, kv_bias, mask, attn.num_heads, p, draw_seed(p, attn.training))
    return out.reshape([batch * q_len, d])


def encoder_layer_forward(ops, layer, src, src_mask):
    """nn.TransformerEncoderLayer.forward (post-LN, no cache) on the kernels; None when the mask does not fit."""
    batch, length, d = src.shape
    mask = mask_4d(src_mask, batch, layer.self_attn.num_heads, length, length)
    if mask is None:
        return None
    training = layer.training
    x2 = src.reshape([batch * length, d])
    attn = _self_attention(ops, layer.self_attn, x2, batch, length, mask)
    x2 = _add_norm(ops, attn, layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias, x2, layer.norm1, layer.dropout1,
                   training)
    x2 = _feed_forward(ops, layer, x2, layer.norm2, layer.dropout2, training)
    return x2.reshape([batch, length, d])


def decoder_layer_forward(ops, layer, tgt, memory, tgt_mask, memory_mask):
    """nn.TransformerDecoderLayer.forward (post-LN, no cache) on the kernels; None when a mask does not fit."""
    batch, q_len, d = tgt.shape
    k_len = memory.shape[1]
    heads = layer.self_attn.num_heads
    self_mask = mask_4d(tgt_mask, batch, heads, q_len, q_len)
    cross_mask = mask_4d(memory_mask, batch, layer.cross_attn.num_heads, q_len, k_len)
    if self_mask is None or cross_mask is None:
        return None
    training = layer.training
    x2 = tgt.reshape([batch * q_len, d])
    attn = _self_attention(ops, layer.self_attn, x2, batch, q_len, self_mask)
    x2 = _add_norm(ops, attn, layer.self_attn.out_proj.weight, layer.self_attn.out_proj.bias, x2, layer.norm1, layer.dropout1,
                   training)
    cross = _cross_attention(ops, layer.cross_attn, x2, memory.reshape([batch * k_len, d]), batch, q_len, k_len, cross_mask)
    x2 = _add_norm(ops, cross, layer.cross_attn.out_proj.weight, layer.cross_attn.out_proj.bias, x2, layer.norm2, layer.dropout2,
                   training)
    x2 = _feed_forward(ops, layer, x2, layer.norm3, layer.dropout3, training)
    return x2.reshape([batch, q_len, d])


def decoder_layer_decode(ops, layer, tgt, memory, tgt_mask, memory_mask, cache):
    """One generation step of nn.TransformerDecoderLayer (one new position, paddle's caches) on the kernels:
    (output, (Cache(new k, new v), static cache)) as paddle's layer returns it; None when the step does not fit."""
    import paddle

    incremental, static = cache
    batch, q_len, d = tgt.shape
    if q_len != 1 or incremental is None or static is None or not hasattr(incremental, "k") or not hasattr(static, "k"):
        return None
    self_attn, cross_attn = layer.self_attn, layer.cross_attn
    heads = self_attn.num_heads
    self_mask = mask_4d(tgt_mask, batch, heads, 1, incremental.k.shape[2] + 1)
    cross_mask = mask_4d(memory_mask, batch, cross_attn.num_heads, 1, static.k.shape[2])
    if self_mask is None or cross_mask is None or self_mask.shape[2] != 1 or cross_mask.shape[2] != 1:
        return None
    x2 = tgt.reshape([batch, d])
    weight, bias = _qkv_weights(self_attn, ("q", "k", "v"))
    attn, new_k, new_v = ops.pf_decode_self_attention(paddle.matmul(x2, weight).reshape([batch, 1, 3 * d]), bias, incremental.k,
                                                      incremental.v, self_mask, heads)
    x2 = _add_norm(ops, attn.reshape([batch, d]), self_attn.out_proj.weight, self_attn.out_proj.bias, x2, layer.norm1,
                   layer.dropout1, False)
    q = paddle.matmul(x2, cross_attn.q_proj.weight).reshape([batch, 1, d])
    cross = ops.pf_decode_cross_attention(q, cross_attn.q_proj.bias, static.k, static.v, cross_mask, cross_attn.num_heads)
    cross = cross[0] if isinstance(cross, (list, tuple)) else cross
    x2 = _add_norm(ops, cross.reshape([batch, d]), cross_attn.out_proj.weight, cross_attn.out_proj.bias, x2, layer.norm2,
                   layer.dropout2, False)
    x2 = _feed_forward(ops, layer, x2, layer.norm3, layer.dropout3, False)
    return x2.reshape([batch, 1, d]), (type(incremental)(new_k, new_v), static)
