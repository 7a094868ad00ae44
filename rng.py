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


def paddle_cpu_rng_checkpoints():
    """Whether paddle's CPU generator state survives a checkpoint. paddle 2.6 serialises it as (device, seed,
    offset) and restores it into an mt19937_64 engine seeded afresh (paddle/fluid/pybind/generator_py.cc), so a
    resumed run would replay paddle's stream (attention dropout) from the seed; paddle 3 keeps the engine."""
    if paddle_cpu_rng_checkpoints.cache is None:
        import pickle

        from paddle.base import core

        g, h = core.Generator(), core.Generator()
        g.manual_seed(1)
        g.random()
        h.set_state(pickle.loads(pickle.dumps(g.get_state())))  # our own object: the round trip a checkpoint makes
        paddle_cpu_rng_checkpoints.cache = g.random() == h.random()
    return paddle_cpu_rng_checkpoints.cache


paddle_cpu_rng_checkpoints.cache = None


def reseed_paddle_cpu(seed, step, rank):
    """Where paddle_cpu_rng_checkpoints() is False: paddle's CPU stream as a function of (seed, step, rank), so a
    resume needs no saved engine state."""
    from paddle.base import core

    core.default_cpu_generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1, np.uint64)[0]))
