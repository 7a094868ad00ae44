"""Seeds and random-number state: Python's, numpy's, paddle's (CPU and CUDA) and the generator the
fast CPU dropout draws its masks from. A checkpoint saves all of them, so a resumed run draws the
same numbers as one that never stopped.

Imports: numpy, and paddle inside the functions; nothing of the project.
"""
import random

import numpy as np

# The fast CPU dropout's masks (speedups.py) come from here: seeded per (seed, rank) by set_seed and
# saved in every checkpoint. A module-level generator so that patched layers, however copied, share it.
dropout_rng = np.random.default_rng(0)


def set_seed(seed, rank=0):
    import paddle

    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)
    dropout_rng.bit_generator.state = np.random.default_rng([seed, rank]).bit_generator.state


def get_rng_state():
    import paddle

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state(),
             "dropout": dropout_rng.bit_generator.state}
    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["paddle_cuda"] = paddle.get_cuda_rng_state()
    return state


def set_rng_state(state):
    import paddle

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "dropout" in state:  # checkpoints written before the fast dropout have none
        dropout_rng.bit_generator.state = state["dropout"]
    if "paddle_cuda" in state and paddle.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(state["paddle_cuda"])
