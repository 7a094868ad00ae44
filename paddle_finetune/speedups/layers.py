"""Layer patches (`use_fast_cpu_kernels`, on CPU): same math as paddle's layers, faster. Each patched layer's
class is swapped for a subclass with its own `forward`, so a `copy.deepcopy` of a patched model is patched too
and computes with its own weights.

Transformer encoder and decoder layers run on the compiled kernels (`speedups.fused`, `speedups.native`) when
they could be built; the per-layer patches below (linear, layer norm, dropout, attention mask) are what runs
where they could not, and in the layers the kernels do not cover.

Imports: numpy; paddle and paddlenlp inside the functions; of the project `runtime.rng` (the dropout
generator), `speedups.fused`, `speedups.native` and `speedups.versions`.
"""
import numpy as np

from paddle_finetune.runtime import rng
from paddle_finetune.speedups import fused, native
from paddle_finetune.speedups.versions import _supported, version_supported


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
        """In training: the compiled kernel (pf_layer_norm, 0.5 ms forward and backward for 6400x256) when it is
        built, else LayerNormFunction."""

        def forward(self, x):
            if _training_in_fp32(x, self.weight):
                ops = native.ops()
                if ops is not None:
                    return ops.pf_layer_norm(x, self.weight, self.bias, float(self._epsilon))[0]
                return LayerNormFunction.apply(x, self.weight, self.bias, self._epsilon)
            return super().forward(x)

    class FastDropout(paddle.nn.Dropout):
        """Masks from numpy's PCG64: paddle's CPU dropout draws from mt19937 at 12.7 ms for 6400x256
        (3.1 ms this way). Same distribution and upscale_in_train scaling; the stream is rng.dropout_rng's."""

        def forward(self, x):
            if not self.training or self.p == 0.0:  # the identity, without an op call per layer per decoding step
                return x
            if self.p < 1.0 and x.dtype == paddle.float32:
                ops = native.ops()
                if ops is not None:  # the mask from a seed (kernels/common.h): nothing stored for the backward
                    return ops.pf_dropout(x, float(self.p), fused.draw_seed(self.p, True))
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

    class FastEncoderLayer(paddle.nn.TransformerEncoderLayer):
        """The whole layer on the compiled kernels (speedups.fused) when they are built and cover the call.
        paddlenlp replaces the base forward with one that takes output_attentions: passed through."""

        def forward(self, src, src_mask=None, cache=None, **kwargs):
            fits = cache is None and not kwargs.get("output_attentions") and src.dtype == paddle.float32
            ops = native.ops() if fits else None
            out = fused.encoder_layer_forward(ops, self, src, src_mask) if ops is not None else None
            return super().forward(src, src_mask, cache, **kwargs) if out is None else out

    class FastDecoderLayer(paddle.nn.TransformerDecoderLayer):
        """The whole layer on the compiled kernels: in training and teacher-forced scoring, and for each generation
        step (one new position against paddle's caches, without gradients)."""

        def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, cache=None, **kwargs):
            fits = (not kwargs.get("output_attentions") and memory is not None and tgt.dtype == paddle.float32
                    and memory.dtype == paddle.float32 and (cache is None or not paddle.is_grad_enabled()))
            ops = native.ops() if fits else None
            out = None
            if ops is not None and cache is None:
                out = fused.decoder_layer_forward(ops, self, tgt, memory, tgt_mask, memory_mask)
            elif ops is not None:
                out = fused.decoder_layer_decode(ops, self, tgt, memory, tgt_mask, memory_mask, cache)
            return super().forward(tgt, memory, tgt_mask, memory_mask, cache, **kwargs) if out is None else out

    return {"linear": FastLinear, "layer_norm": FastLayerNorm, "dropout": FastDropout, "attention": FastMultiHeadAttention,
            "encoder_layer": FastEncoderLayer, "decoder_layer": FastDecoderLayer}


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
    "encoder_layer": lambda layer: fused.layer_supported(layer, "encoder"),
    "decoder_layer": lambda layer: fused.layer_supported(layer, "decoder"),
}


def use_fast_cpu_kernels(model):
    """On CPU, swap slow paddle kernels in `model`'s layers for faster ones with the same math.

    * biased nn.Linear and nn.LayerNorm: PyLayers with cheaper backwards, while gradients are on;
    * nn.Dropout (upscale_in_train): masks drawn by numpy in training, no op at all in eval;
    * nn.MultiHeadAttention: broadcast additive masks expanded first;
    * BART's learned positions: a per-example lookup while training (paddlenlp 2.8);
    * nn.TransformerEncoderLayer / nn.TransformerDecoderLayer (post-LN, GELU): the whole layer on the compiled
      kernels (speedups.fused), built here on first use; without them, paddle's forward over the patches above.
    Inference keeps paddle's own linear and layer norm. Returns {kind: layers switched}.
    """
    import paddle

    counts = {"linear": 0, "layer_norm": 0, "dropout": 0, "attention": 0, "positions": 0, "encoder_layer": 0, "decoder_layer": 0}
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
    if counts["encoder_layer"] or counts["decoder_layer"]:
        native.ops()  # built (or found wanting) now, before the first step, with its one log line
    return counts
