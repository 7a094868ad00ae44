"""The engine facade the trainers call: everything a trainer (train.py, train_classification.py, train_mlm.py,
train_clm.py) needs from the library, under one short name (`import train_utils as tu`).

A trainer validates its config, calls start_run, loads its data, tokenizer and model, wires its task code
(paddle_finetune.tasks) into a TrainingTask and hands it to run_training. Its `run(config=None, **overrides)`
is the Python API (run_in_process); `python <trainer>.py --key=value` goes through run_main, the only place
that turns errors into an exit status.

The library itself is the package `paddle_finetune` (see its docstring for the map).

Imports: the package only.
"""
from paddle_finetune.cli import run_in_process, run_main  # noqa: F401
from paddle_finetune.models.loading import (  # noqa: F401
    load_model, load_tokenizer, looks_like_path, resolve_pretrained, usable_positions, vocab_size,
)
from paddle_finetune.training.loop import run_training  # noqa: F401
from paddle_finetune.training.session import start_run  # noqa: F401
from paddle_finetune.training.task import Batch, Scored, TrainingTask  # noqa: F401
