"""Export for Paddle Inference: the static graphs of a trained model (inference/graphs.py, paddle.jit.save), with
everything prediction reads beside them, checked against the dygraph model before the directory is published.

Imports: the standard library; paddle and paddlenlp inside the functions; of the project `errors`,
`checkpoints` (the model directory of an output_dir, the export directory), `conversion` (telling an HF
checkpoint apart), `models.weights`, `tasks` (prediction's own generation settings) and the other `inference`
modules.
"""
import os
import shutil
import time

from paddle_finetune.checkpoints.export_dir import check_export_dir, staged_export_dir
from paddle_finetune.checkpoints.listing import choose_model_dir
from paddle_finetune.errors import ConfigError, VerificationError
from paddle_finetune.inference.files import saved_program, write_inference_config

# Files prediction reads from a model directory, copied as they are.
COPIED_FILES = ("label_map.json", "train_config.json")


def task_of(paddle_class):
    """The prediction task of a paddlenlp class, or None when it has no exported form."""
    if paddle_class == "BartForConditionalGeneration":
        return "summarization"
    if paddle_class == "GPTForCausalLM":
        return "causal_lm"
    if paddle_class and paddle_class.endswith("ForSequenceClassification"):
        return "classification"
    if paddle_class and paddle_class.endswith("ForMaskedLM"):
        return "masked_lm"
    return None


EXPORTABLE = "BartForConditionalGeneration (summarization), GPTForCausalLM, *ForSequenceClassification, *ForMaskedLM"


def load_source(src):
    """(model dir, why, task, paddlenlp class name, model in eval mode, tokenizer) of what SRC names."""
    import json

    import paddlenlp.transformers as pnt

    from paddle_finetune.conversion import has_tokenizer, is_hf_checkpoint_dir
    from paddle_finetune.models.weights import load_model_dir

    if not os.path.isdir(src):
        raise ConfigError(f"{src}: not a directory")
    model_dir, why = choose_model_dir(src)
    if is_hf_checkpoint_dir(model_dir):
        raise ConfigError(f"{model_dir} is a Hugging Face checkpoint: convert it first "
                          f"(python tools/convert_hf_to_paddle.py {model_dir} DIR), or fine-tune from it")
    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
        paddle_class = (json.load(f).get("architectures") or [None])[0]
    task = task_of(paddle_class)
    if task is None or not hasattr(pnt, paddle_class):
        raise ConfigError(f"{model_dir}: {paddle_class or 'a model without architectures in config.json'} has no "
                          f"Paddle Inference export here; exportable: {EXPORTABLE}")
    if not has_tokenizer(model_dir):
        raise ConfigError(f"{model_dir} has no tokenizer files; prediction over the exported model needs them")
    model = load_model_dir(getattr(pnt, paddle_class), model_dir)
    model.eval()
    return model_dir, why, task, paddle_class, model, pnt.AutoTokenizer.from_pretrained(model_dir)


def _trace(stage, name, layer, specs):
    import paddle

    from paddle_finetune.inference.graphs import traceable

    # full_graph: the AST translator, whose programs both paddle 2.6 and 3.3 save (3.3's default SOT mode
    # could not trace the cache tuples).
    with traceable(layer):
        static = paddle.jit.to_static(layer, input_spec=specs, full_graph=True)
        paddle.jit.save(static, os.path.join(stage, name))
    return {"program": saved_program(stage, name), "params": name + ".pdiparams"}


ONEDNN_BY_DEFAULT = ("classification", "masked_lm")  # logits graphs: faster with oneDNN; generation steps: slower


def export_inference(src, dst, onednn=None, tolerance=1e-4, settings=None):
    """Export SRC's model into DST (new or empty, outside SRC); return the report (also in inference_config.json).

    onednn: whether the predictors run with oneDNN (recorded in inference_config.json); None: per task
    (ONEDNN_BY_DEFAULT). settings: the summarization settings (max_source_length, max_target_length, min_target_length, num_beams)
    the check decodes with; default: the run's. Raises ConfigError for what cannot be exported or a bad
    destination, VerificationError when the exported graphs do not predict like the dygraph model (nothing
    is written in either case).
    """
    import paddle
    import paddlenlp

    from paddle_finetune.inference.graphs import _heads, build_graphs
    from paddle_finetune.inference.verify import verify_exported

    started = time.time()
    check_export_dir(dst, src, tool="export_inference")
    model_dir, why, task, paddle_class, model, tokenizer = load_source(src)
    graphs = build_graphs(model, task)
    onednn = task in ONEDNN_BY_DEFAULT if onednn is None else onednn
    report = {"task": task, "paddle_class": paddle_class, "source": os.path.abspath(src),
              "model_dir": os.path.abspath(model_dir), "chosen": why, "destination": os.path.abspath(dst),
              "paddle_version": paddle.__version__, "paddlenlp_version": paddlenlp.__version__, "onednn": bool(onednn),
              "graphs": {}}
    if task in ("causal_lm", "summarization"):
        report["cache_shape"] = list(_heads(model, "bart" if task == "summarization" else "gpt"))
    with staged_export_dir(dst, src, model_dir, tool="export_inference") as stage:
        for name, (layer, specs, inputs, outputs) in graphs.items():
            try:
                files = _trace(stage, name, layer, specs)
            except Exception as e:  # noqa: BLE001 - paddle's tracer raises many kinds
                raise ConfigError(f"{model_dir}: graph {name!r} of {paddle_class} did not trace to a static graph "
                                  f"with paddle {paddle.__version__} ({type(e).__name__}: "
                                  f"{' '.join(str(e).split())[-300:]})") from None
            report["graphs"][name] = {**files, "inputs": inputs, "outputs": outputs}
        model.config.save_pretrained(stage)
        if task in ("causal_lm", "summarization"):
            model.generation_config.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        for name in COPIED_FILES:
            if os.path.isfile(os.path.join(model_dir, name)):
                shutil.copyfile(os.path.join(model_dir, name), os.path.join(stage, name))
        report["export_seconds"] = round(time.time() - started, 3)
        write_inference_config(stage, report)  # the predictors read it; rewritten below with the check's result
        checked = time.time()
        report["verification"] = verify_exported(stage, task, model, tokenizer, tolerance, settings)
        report["verify_seconds"] = round(time.time() - checked, 3)
        write_inference_config(stage, report)
        if not report["verification"]["passed"]:
            raise VerificationError(failure_message(report["verification"], tolerance), report)
    report["files"] = sorted(os.listdir(dst))
    return report


def failure_message(v, tolerance):
    parts = [f"{name}: max abs diff {diff:.3g} > tolerance {tolerance:g}"
             for name, diff in v.get("max_abs_diff", {}).items() if diff > tolerance]
    parts += [f"{name} differ: {detail}" for name, detail in v.get("mismatches", {}).items()]
    return "the exported graphs do not predict like the dygraph model (nothing was written): " + "; ".join(parts)

