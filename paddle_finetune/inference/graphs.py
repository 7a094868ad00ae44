"""The static graphs an export traces, per task: what each takes and returns, as a paddle Layer around the
trained model's own sublayers (so the traced code is paddlenlp's, as in dygraph prediction) and its InputSpecs.

    classification   logits(input_ids, token_type_ids, attention_mask)
    masked_lm        logits(input_ids, attention_mask)
    causal_lm        step(input_ids, past keys/values) -> logits, keys/values with the new tokens appended;
                     the first call passes length-0 keys/values, so one graph gives the logits of a whole text
                     and every generation step after it (GPT's KV cache)
    summarization    encoder(input_ids, attention_mask) -> encoder output
                     cross_cache(encoder output) -> each decoder layer's cross-attention keys/values
                     decoder_step(decoder_input_ids, attention_mask, self and cross keys/values)
                         -> logits, self-attention keys/values with the new token appended

A whole generation loop does not trace (paddlenlp 2.8's GenerationMixin.to_static only covers decoder-only
sampling: for BART it needs an encoder_output it never computes; for GPT paddle 3.3 stops at Python control
flow on a tensor and 2.6 at `super()` inside GPT's layer norm), so the search itself runs in Python over the
step graphs (predictor.py), the way paddlenlp's generate() runs it over the dygraph model.

Imports: paddle at module level (paddle 2.6's tracer resolves names in forward() as module globals, not as
closures; only inference.export imports this module, inside its function); of the project `runtime.environment`.
"""
import contextlib

from paddle_finetune.runtime.environment import record_launch_env

record_launch_env()  # zlib before paddle 2.6, and the user's OMP_NUM_THREADS kept
import paddle  # noqa: E402
from paddle.nn import MultiHeadAttention  # noqa: E402


def _spec(shape, dtype, name):
    return paddle.static.InputSpec(shape=shape, dtype=dtype, name=name)


def _logits(out):
    return out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)


def _heads(model, family):
    """(layers, heads, head_dim) of a decoder's attention, from its config."""
    cfg = model.config
    if family == "bart":
        return cfg.decoder_layers, cfg.decoder_attention_heads, cfg.d_model // cfg.decoder_attention_heads
    return cfg.num_hidden_layers, cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads


class SequenceClassifier(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, token_type_ids, attention_mask):
        # As tasks.classification.forward_logits calls it.
        return _logits(self.model(input_ids=input_ids, token_type_ids=token_type_ids,
                                  attention_mask=attention_mask, return_dict=True))

class MaskedLM(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        # As tasks.masked_lm.mlm_logits calls it.
        return _logits(self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True))

class CausalLMStep(paddle.nn.Layer):
    def __init__(self, model, n_layers):
        super().__init__()
        self.model, self.n_layers = model, n_layers

    def forward(self, input_ids, past):
        cache = []
        for i in range(self.n_layers):
            cache.append((past[2 * i], past[2 * i + 1]))
        out = self.model(input_ids=input_ids, use_cache=True, past_key_values=tuple(cache), return_dict=False)
        flat = []
        for key, value in out[1]:
            flat += [key, value]
        return [out[0]] + flat

class Encoder(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.get_encoder()

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=False)

class CrossCache(paddle.nn.Layer):
    def __init__(self, model):
        super().__init__()
        self.layers = model.get_decoder().decoder.layers

    def forward(self, encoder_output):
        # What TransformerDecoder.gen_cache computes for cross-attention: each layer's StaticCache.
        flat = []
        for layer in self.layers:
            key, value = layer.cross_attn.compute_kv(encoder_output, encoder_output)
            flat += [key, value]
        return flat

class DecoderStep(paddle.nn.Layer):
    def __init__(self, model, n_layers):
        super().__init__()
        self.decoder = model.get_decoder()
        self.lm_head_weight, self.final_logits_bias = model.lm_head_weight, model.final_logits_bias
        self.n_layers = n_layers

    def forward(self, decoder_input_ids, attention_mask, caches):
        # As BartModel.forward turns a 2-D mask into the decoder's memory mask.
        memory_mask = (1.0 - paddle.unsqueeze(attention_mask, axis=[1, 2])) * -1e4
        cache = []
        for i in range(self.n_layers):
            cache.append((MultiHeadAttention.Cache(caches[4 * i], caches[4 * i + 1]),
                          MultiHeadAttention.StaticCache(caches[4 * i + 2], caches[4 * i + 3])))
        # The encoder output is not read: every cross-attention takes its keys/values from the StaticCache.
        hidden, new_cache = self.decoder(decoder_input_ids, None, caches[2], memory_mask, cache=cache,
                                         return_dict=False)
        logits = paddle.matmul(hidden, self.lm_head_weight, transpose_y=True) + self.final_logits_bias
        flat = []
        for self_cache, _ in new_cache:
            flat += [self_cache.k, self_cache.v]
        return [logits] + flat



@contextlib.contextmanager
def traceable(model):
    """paddlenlp's GPTLayerNorm.forward calls super().forward(), which paddle 2.6's tracer cannot translate
    ("super(): no arguments"); without its fused kernel it is paddle's LayerNorm.forward, which is used while
    tracing."""
    from paddlenlp.transformers.gpt.modeling import GPTLayerNorm

    patched = isinstance(model, paddle.nn.Layer) and any(
        isinstance(layer, GPTLayerNorm) and not layer.config.use_fast_layer_norm for layer in model.sublayers())
    original = GPTLayerNorm.__dict__["forward"]
    if patched:
        GPTLayerNorm.forward = paddle.nn.LayerNorm.forward
    try:
        yield
    finally:
        GPTLayerNorm.forward = original


def build_graphs(model, task):
    """{graph name: (Layer, input specs, input names, output names)} for a model in eval mode."""
    if task == "classification":
        names = ["input_ids", "token_type_ids", "attention_mask"]
        specs = [_spec([None, None], "int64", names[0]), _spec([None, None], "int64", names[1]),
                 _spec([None, None], "float32", names[2])]
        return {"model": (SequenceClassifier(model), specs, names, ["logits"])}
    if task == "masked_lm":
        names = ["input_ids", "attention_mask"]
        return {"model": (MaskedLM(model), [_spec([None, None], "int64", names[0]), _spec([None, None], "float32", names[1])],
                          names, ["logits"])}
    if task == "causal_lm":
        n, h, d = _heads(model, "gpt")
        past = [f"past_{kind}_{i}" for i in range(n) for kind in ("key", "value")]
        # paddlenlp GPT keeps keys/values as [batch, length, heads, head_dim].
        specs = [_spec([None, None], "int64", "input_ids"), [_spec([None, None, h, d], "float32", p) for p in past]]
        return {"model": (CausalLMStep(model, n), specs, ["input_ids"] + past,
                          ["logits"] + [p.replace("past_", "present_") for p in past])}
    if task == "summarization":
        n, h, d = _heads(model, "bart")
        cross = [f"cross_{kind}_{i}" for i in range(n) for kind in ("key", "value")]
        caches = [f"{part}_{kind}_{i}" for i in range(n) for part in ("self", "cross") for kind in ("key", "value")]
        # paddle's MultiHeadAttention keeps keys/values as [batch, heads, length, head_dim].
        step_specs = [_spec([None, None], "int64", "decoder_input_ids"), _spec([None, None], "float32", "attention_mask"),
                      [_spec([None, h, None, d], "float32", c) for c in caches]]
        return {
            "encoder": (Encoder(model), [_spec([None, None], "int64", "input_ids"), _spec([None, None], "float32", "attention_mask")],
                        ["input_ids", "attention_mask"], ["encoder_output"]),
            "cross_cache": (CrossCache(model), [_spec([None, None, model.config.d_model], "float32", "encoder_output")],
                            ["encoder_output"], cross),
            "decoder_step": (DecoderStep(model, n), step_specs, ["decoder_input_ids", "attention_mask"] + caches,
                             ["logits"] + [f"self_{kind}_{i}" for i in range(n) for kind in ("key", "value")]),
        }
    raise ValueError(f"unknown task {task!r}")
