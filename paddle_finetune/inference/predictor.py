"""Running an exported directory (tools/export_inference.py) on Paddle Inference: one CPU predictor per graph
(IR passes on, oneDNN as the export recorded it, the project's math threads), and the models the prediction
tools call as they call a dygraph model. The classifier and the masked LM return logits; the causal LM and
BART are paddlenlp GenerationMixins whose forward runs the step graphs, so paddlenlp's own generate() (greedy,
beam search, sampling, the logits processors) and this project's beam-search speedups drive them exactly as
they drive the dygraph model.

Imports: the standard library and numpy; paddle and paddlenlp inside the functions; of the project `errors`,
`inference.files` and `runtime.environment`.
"""
import os
from types import SimpleNamespace

from paddle_finetune.errors import CheckpointError
from paddle_finetune.inference.files import program_file, read_inference_config


class Graph:
    """One exported graph on a Paddle Inference predictor: paddle tensors in, paddle tensors out.

    Inputs are shared with the predictor without a copy (share_external_data: a beam's cross-attention
    keys/values stay where they are from step to step), once dense; outputs are copied out, because the predictor
    reuses its output buffers at the next run. (predictor.run(list of tensors) would avoid that copy,
    but crashes paddle 2.6.2 with SIGSEGV.)
    """

    def __init__(self, directory, name, spec, threads, onednn):
        from paddle import inference

        program = os.path.join(directory, program_file(spec, name))
        params = os.path.join(directory, spec["params"])
        config = inference.Config(program, params)
        config.disable_gpu()
        config.switch_ir_optim(True)
        config.set_cpu_math_library_num_threads(threads)
        if onednn:
            config.enable_mkldnn()
            # Generation feeds a new shape every step: keep oneDNN's primitive cache bounded.
            config.set_mkldnn_cache_capacity(64)
        else:
            config.disable_mkldnn()
        config.disable_glog_info()
        try:
            self.predictor = inference.create_predictor(config)
        except Exception as e:  # noqa: BLE001 - paddle raises its own error types for unreadable programs
            raise CheckpointError(f"{program}: Paddle Inference cannot load it ({' '.join(str(e).split())[:300]})") from None
        self.inputs = [self.predictor.get_input_handle(n) for n in self.predictor.get_input_names()]
        # Output names differ by paddle version (fetch_name_N, save_infer_model/scale_N); their order is the graph's.
        self.outputs = [self.predictor.get_output_handle(n) for n in self.predictor.get_output_names()]
        if len(self.inputs) != len(spec["inputs"]) or len(self.outputs) != len(spec["outputs"]):
            raise CheckpointError(f"{program}: {len(self.inputs)} inputs and {len(self.outputs)} outputs, "
                                  f"inference_config.json lists {len(spec['inputs'])} and {len(spec['outputs'])}")

    def __call__(self, *tensors):
        import paddle

        for handle, tensor in zip(self.inputs, tensors):
            # The predictor reads the data pointer as a dense array: a strided view (generate()'s last-token
            # slice input_ids[:, -1]) would hand it other rows' tokens.
            handle.share_external_data(tensor if tensor.is_contiguous() else tensor.contiguous())
        self.predictor.run()
        return [paddle.to_tensor(handle.copy_to_cpu()) for handle in self.outputs]


class _Model:
    """What every exported model has: its paddlenlp config, and eval() for code written for dygraph models."""

    def __init__(self, directory, graphs, config):
        self.directory, self.graphs, self.config = directory, graphs, config

    def eval(self):
        return self

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)


def _float_mask(mask, like):
    import paddle

    if mask is None:
        return paddle.ones(like.shape, dtype="float32")
    if mask.ndim != 2:
        raise ValueError("an exported model takes a 2-D attention mask (1 = token, 0 = padding)")
    return mask.astype("float32")


class InferenceClassifier(_Model):
    def forward(self, input_ids, token_type_ids=None, attention_mask=None, return_dict=True, **unused):
        import paddle

        token_type_ids = token_type_ids if token_type_ids is not None else paddle.zeros_like(input_ids)
        (logits,) = self.graphs["model"](input_ids, token_type_ids, _float_mask(attention_mask, input_ids))
        return SimpleNamespace(logits=logits)


class InferenceMaskedLM(_Model):
    def forward(self, input_ids, attention_mask=None, return_dict=True, **unused):
        (logits,) = self.graphs["model"](input_ids, _float_mask(attention_mask, input_ids))
        return SimpleNamespace(logits=logits)


def _generation_classes():
    """The two GenerationMixin models, built on first use (paddlenlp imports paddle)."""
    import paddle
    from paddle.nn import MultiHeadAttention
    from paddlenlp.generation.utils import GenerationMixin
    from paddlenlp.transformers import BartForConditionalGeneration, GPTForCausalLM

    class InferenceCausalLM(_Model, GenerationMixin):
        # paddlenlp's GPT feeds the last token and the cache after the first step, and drops the mask.
        prepare_inputs_for_generation = GPTForCausalLM.prepare_inputs_for_generation
        prepare_attention_mask_for_generation = GPTForCausalLM.__dict__["prepare_attention_mask_for_generation"]

        def forward(self, input_ids, position_ids=None, attention_mask=None, use_cache=False, past_key_values=None,
                    return_dict=False, **unused):
            if position_ids is not None or attention_mask is not None:
                raise ValueError("the exported causal LM takes input_ids (and its cache) only, as generate_text calls it")
            n, h, d = self.shape
            if past_key_values is None:
                empty = paddle.zeros([input_ids.shape[0], 0, h, d], dtype="float32")
                past = [empty] * (2 * n)
            else:
                past = [t for layer in past_key_values for t in layer]
            logits, *present = self.graphs["model"](input_ids, *past)
            cache = tuple((present[2 * i], present[2 * i + 1]) for i in range(n))
            if return_dict:
                return SimpleNamespace(logits=logits, past_key_values=cache if use_cache else None)
            return (logits, cache) if use_cache else logits

    class InferenceSeq2Seq(_Model, GenerationMixin):
        prepare_inputs_for_generation = BartForConditionalGeneration.prepare_inputs_for_generation

        @staticmethod
        def prepare_attention_mask_for_generation(input_ids, pad_token_id, eos_token_id):
            # The exported graphs take the 2-D mask prediction passes; without one, every non-pad token counts.
            if pad_token_id is None:
                return paddle.ones(input_ids.shape, dtype="float32")
            return (input_ids != pad_token_id).astype("float32")

        def get_encoder(self):
            def encoder(input_ids=None, attention_mask=None, **other):
                extra = sorted(k for k, v in other.items() if v is not None)
                if extra:
                    raise ValueError(f"the exported encoder takes input_ids and attention_mask only, not {extra}")
                (output,) = self.graphs["encoder"](input_ids, _float_mask(attention_mask, input_ids))
                return output
            return encoder

        def forward(self, input_ids=None, decoder_input_ids=None, encoder_output=None, attention_mask=None,
                    decoder_attention_mask=None, use_cache=True, cache=None, **unused):
            if input_ids is not None or decoder_attention_mask is not None or encoder_output is None:
                raise ValueError("the exported BART decodes from an encoder output, as generate() calls it")
            n, h, d = self.shape
            if cache is None:
                # What BartModel's first step builds with gen_cache: empty self-attention keys/values, and the
                # cross-attention ones computed once from the encoder output.
                cross = self.graphs["cross_cache"](encoder_output)
                empty = paddle.zeros([encoder_output.shape[0], h, 0, d], dtype="float32")
                cache = [(MultiHeadAttention.Cache(empty, empty),
                          MultiHeadAttention.StaticCache(cross[2 * i], cross[2 * i + 1])) for i in range(n)]
            elif decoder_input_ids.shape[1] != 1:
                raise ValueError("with a cache, the exported decoder takes one new token per step")
            flat = [t for self_cache, cross_cache in cache for t in (*self_cache, *cross_cache)]
            logits, *present = self.graphs["decoder_step"](decoder_input_ids, _float_mask(attention_mask, encoder_output[:, :, 0]),
                                                          *flat)
            new_cache = [(MultiHeadAttention.Cache(present[2 * i], present[2 * i + 1]), cache[i][1]) for i in range(n)]
            return logits, new_cache

    return InferenceCausalLM, InferenceSeq2Seq


TASKS = ("classification", "masked_lm", "causal_lm", "summarization")


def load_exported(directory, onednn=None, threads=None):
    """The model of an exported directory, with its task: (task, model)."""
    import paddlenlp.transformers as pnt

    from paddle_finetune.runtime.environment import cpu_threads, record_launch_env

    record_launch_env()
    info = read_inference_config(directory)
    threads = threads or cpu_threads()
    graphs = {name: Graph(directory, name, spec, threads, info["onednn"] if onednn is None else onednn)
              for name, spec in info["graphs"].items()}
    config = getattr(pnt, info["paddle_class"]).config_class.from_pretrained(directory)
    task = info["task"]
    if task == "classification":
        return task, InferenceClassifier(directory, graphs, config)
    if task == "masked_lm":
        return task, InferenceMaskedLM(directory, graphs, config)
    causal, seq2seq = _generation_classes()
    model = (causal if task == "causal_lm" else seq2seq)(directory, graphs, config)
    model.shape = tuple(info["cache_shape"])
    from paddlenlp.generation import GenerationConfig

    model.generation_config = (GenerationConfig.from_pretrained(directory)
                               if os.path.isfile(os.path.join(directory, "generation_config.json"))
                               else GenerationConfig.from_model_config(config))
    return task, model


def load_for_prediction(directory, task, device="auto", defaults=None):
    """What models.loading.load_trained returns, for an exported directory: (directory, model, tokenizer, the
    training config it was exported with over `defaults`). The predictors run on the CPU."""
    import json
    import sys

    from paddlenlp.transformers import AutoTokenizer

    from paddle_finetune.errors import ConfigError
    from paddle_finetune.runtime.environment import setup_device

    if device == "gpu":
        raise ConfigError("--inference_model runs on Paddle Inference's CPU predictor; drop --device=gpu "
                          "(or predict with the dygraph model on the GPU)")
    info = read_inference_config(directory)
    if info["task"] != task:
        raise ConfigError(f"--inference_model {directory} holds a {info['task']} model ({info['paddle_class']}), "
                          f"not a {task} one")
    setup_device("cpu")  # the search loop around the predictors runs paddle's dygraph ops on the CPU
    config = dict(defaults or {})
    path = os.path.join(directory, "train_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            config.update(json.load(f))
    _, model = load_exported(directory)
    print(f"using the exported {info['paddle_class']} in {directory} (Paddle Inference, exported with paddle "
          f"{info['paddle_version']})", file=sys.stderr)
    return directory, model, AutoTokenizer.from_pretrained(directory), config
