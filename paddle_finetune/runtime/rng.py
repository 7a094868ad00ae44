"""Seeds and random-number state: Python's, numpy's, paddle's (CPU and CUDA) and the generator the
fast CPU dropout draws its masks from. A checkpoint saves all of them, so a resumed run draws the
same numbers as one that never stopped; rng_state_to_json / rng_state_from_json turn that state into
plain JSON data and back, exactly (checkpoints never pickle it).

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


# ----------------------------------------------------------------------------
# JSON form, for checkpoints: every field is an int, a float or a str, so json round-trips it exactly.
# ----------------------------------------------------------------------------
def _generator_to_json(generator_state):
    fields = generator_state.__getstate__()
    device, seed, offset = fields[:3]
    out = {"device": int(device), "seed": int(seed), "offset": int(offset)}
    if len(fields) > 3:  # paddle 3: the engine's text form as a list of byte values (2.6 has none: see paddle_cpu_rng_checkpoints)
        out["state"] = bytes(fields[3]).decode("latin-1")
    return out


def _generator_from_json(data):
    import paddle

    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("device", "seed", "offset")) \
            or not isinstance(data.get("state", ""), str):
        raise ValueError("a paddle generator state needs int device/seed/offset and a str state")
    cls = type(paddle.get_rng_state()[0])  # paddle's GeneratorState: no constructor, only pickle's __setstate__
    state = cls.__new__(cls)
    fields = (data["device"], data["seed"], data["offset"])
    if "state" in data:
        fields += (list(data["state"].encode("latin-1")),)
    try:
        state.__setstate__(fields)
    except (TypeError, RuntimeError, ValueError) as e:
        raise ValueError(f"a paddle generator state this paddle ({paddle.__version__}) cannot restore "
                         f"(saved by another paddle version?): {e}") from None
    return state


def rng_state_to_json(state):
    """get_rng_state()'s result as JSON-ready data."""
    version, internal, gauss = state["python"]
    kind, key, pos, has_gauss, cached = state["numpy"]
    out = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "key": [int(k) for k in key], "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(cached)},
        "paddle": [_generator_to_json(g) for g in state["paddle"]],
    }
    if "dropout" in state:
        out["dropout"] = state["dropout"]
    if "paddle_cuda" in state:
        out["paddle_cuda"] = [_generator_to_json(g) for g in state["paddle_cuda"]]
    return out


def rng_state_from_json(data):
    """The inverse of rng_state_to_json, checked: a malformed state is a ValueError saying what is wrong,
    never a generator silently seeded with garbage."""
    def ints(values, n, what):
        if not isinstance(values, list) or len(values) != n or not all(type(v) is int for v in values):
            raise ValueError(f"{what} must be a list of {n} ints")
        return values

    try:
        py, npy = data["python"], data["numpy"]
        gauss = py["gauss"]
        if gauss is not None and not isinstance(gauss, float):
            raise ValueError("python gauss must be a float or null")
        state = {
            "python": (int(py["version"]), tuple(ints(py["state"], 625, "python's state")), gauss),
            "numpy": (str(npy["kind"]), np.array(ints(npy["key"], 624, "numpy's key"), dtype=np.uint32), int(npy["pos"]),
                      int(npy["has_gauss"]), float(npy["gauss"])),
            "paddle": [_generator_from_json(g) for g in data["paddle"]],
        }
        if "dropout" in data:
            dropout = data["dropout"]
            if not isinstance(dropout, dict) or dropout.get("bit_generator") != dropout_rng.bit_generator.state["bit_generator"]:
                raise ValueError(f"dropout state must be a {dropout_rng.bit_generator.state['bit_generator']} state")
            np.random.Generator(type(dropout_rng.bit_generator)()).bit_generator.state = dropout  # validates it
            state["dropout"] = dropout
        if "paddle_cuda" in data:
            state["paddle_cuda"] = [_generator_from_json(g) for g in data["paddle_cuda"]]
    except (KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"malformed RNG state ({type(e).__name__}: {e})") from None
    return state
