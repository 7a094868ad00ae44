"""Paddle Inference: a trained model exported as static graphs (tools/export_inference.py) and run on CPU
predictors by the prediction tools (--inference_model).

Modules: `graphs` (what each task's graphs take and return, traced from the model's own layers), `files` (the
exported directory's format, inference_config.json), `export` (tracing, saving, publishing), `verify` (the
exported graphs against the dygraph model, through the prediction code) and `predictor` (the predictors, and
models the prediction code calls as it calls dygraph ones).

Imports: of the project `errors`, `checkpoints`, `conversion`, `models`, `tasks`, `runtime`; paddle and
paddlenlp inside the functions.
"""
