"""Shared by the checkpoint tests: a tiny real BART with an optimizer that has taken steps, saved as a
real checkpoint, and a pickle that leaves a marker file if anything ever unpickles it."""
import os
import pickle

import numpy as np

from paddle_finetune.checkpoints.files import COMPLETE_MARKER
from paddle_finetune.checkpoints.storage import save_checkpoint
from paddle_finetune.training.optimization import build_optimizer
OPTIMIZER_CONFIG = {"learning_rate": 0.01, "warmup_steps": 0, "warmup_proportion": 0.1, "adam_epsilon": 1e-8,
                    "weight_decay": 0.01, "max_grad_norm": 1.0}


def tiny_bart(seed=0, dropout=0.1, vocab=60):
    import paddle
    from paddlenlp.transformers import BartConfig, BartForConditionalGeneration

    paddle.set_device("cpu")
    paddle.seed(seed)
    config = BartConfig(vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=2, eos_token_id=3, decoder_start_token_id=2, dropout=dropout)
    return BartForConditionalGeneration(config)


def train_steps(model, optimizer, scheduler, steps, seed=0):
    """A few real AdamW steps, so the optimizer has every accumulator; returns the losses."""
    import paddle

    rng = np.random.RandomState(seed)
    losses = []
    for _ in range(steps):
        ids = paddle.to_tensor(rng.randint(4, 60, (2, 7)))
        loss = model(input_ids=ids, decoder_input_ids=ids).mean()
        loss.backward()
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        losses.append(float(loss))
    return losses


def tiny_run(seed=0, steps=2):
    model = tiny_bart(seed)
    optimizer, scheduler = build_optimizer(model, OPTIMIZER_CONFIG, 20)
    train_steps(model, optimizer, scheduler, steps)
    return model, optimizer, scheduler


def save_tiny_checkpoint(out, step, config=None, **kwargs):
    model, optimizer, scheduler = tiny_run(steps=2)
    os.makedirs(out, exist_ok=True)
    return save_checkpoint(out, step, model, None, optimizer, scheduler, None,
                                       {"global_step": step, "epoch": 0, "position": step}, config or {"seed": 42}, **kwargs)


class Marker:
    """Unpickling this writes `path`: code ran."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('pwned')",)


def crafted_pickle(marker_path, wrap=None):
    """pickle bytes that write marker_path when loaded; `wrap` nests the payload (e.g. in a state dict)."""
    payload = Marker(marker_path)
    return pickle.dumps(wrap(payload) if wrap else payload, protocol=4)


def make_checkpoint(out, step, complete=True):
    """A checkpoint directory with an empty weights file: complete (with a marker that records its step) or killed
    mid-save (no marker)."""
    path = os.path.join(out, f"checkpoint-{step}")
    os.makedirs(path)
    open(os.path.join(path, "model_state.pdparams"), "w").close()
    if complete:
        with open(os.path.join(path, COMPLETE_MARKER), "w") as f:
            f.write(f'{{"format": 2, "step": {step}, "files": {{}}}}')
    return path


def plant_pickles(path, marker):
    """Crafted pickles under every name the old format (or paddlenlp) would unpickle."""
    for name in ("model_state.pdparams", "optimizer.pdopt", "trainer_state.pdparams", "rng_state_rank1.pdstate"):
        with open(os.path.join(path, name), "wb") as f:
            f.write(crafted_pickle(marker, lambda p: {"state": p}))
