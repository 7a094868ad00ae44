"""The optimizer's state, keyed by structured parameter names (stable across processes, unlike param.name):
"<parameter>/<accumulator>" and "<parameter>/master_weight", saved as arrays and applied back with every
entry checked.

Imports: numpy; paddle inside; of the project `errors`, `checkpoints.files` and `models.weights`.
"""
import contextlib

import numpy as np

from paddle_finetune.checkpoints.files import FORMAT
from paddle_finetune.errors import CheckpointError
from paddle_finetune.models.weights import _name_list, unwrap_model


def _structured_names(model):
    """param.name -> the first structured name of that parameter (tied parameters count once)."""
    names = {}
    for name, param in unwrap_model(model).named_parameters():
        names.setdefault(param.name, name)
    return names


def _optimizer_vars(optimizer, model):
    """Every tensor of the optimizer's state by a stable key: "<parameter>/<accumulator>" (e.g.
    "bart.shared.weight/moment1") and "<parameter>/master_weight". Accumulators of a master weight
    (multi_precision) belong to its parameter."""
    names = _structured_names(model)
    masters = getattr(optimizer, "_master_weights", None) or {}
    owners = {**names, **{var.name: names[p] for p, var in masters.items() if p in names}}
    found = {}
    for accumulator, per_owner in optimizer._accumulators.items():
        for owner, var in per_owner.items():
            if owner not in owners:
                raise CheckpointError(f"optimizer state for {owner}, which is not a parameter of the model")
            found[f"{owners[owner]}/{accumulator}"] = var
    for param_name, var in masters.items():
        if param_name not in names:
            raise CheckpointError(f"optimizer master weight for {param_name}, which is not a parameter of the model")
        found[f"{names[param_name]}/master_weight"] = var
    return found


def optimizer_state(optimizer, model):
    """(arrays, meta) to save: _optimizer_vars as numpy arrays, and meta with each one's dtype."""
    if getattr(optimizer, "_accumulators_holder", None):
        raise CheckpointError("optimizer holds a loaded state that was never applied (set_state_dict before its first step)")
    found = _optimizer_vars(optimizer, model)
    arrays = {key: np.ascontiguousarray(var.numpy()) for key, var in found.items()}
    return arrays, {"format": FORMAT, "dtypes": {key: str(var.dtype).replace("paddle.", "") for key, var in found.items()}}


def create_accumulators(optimizer, parameters):
    """The optimizer's per-parameter state (moments, beta powers, master weights), made as its first step would."""
    import paddle

    block = paddle.static.default_main_program().global_block()
    guard = getattr(paddle.base.framework, "dygraph_guard_if_declarative", contextlib.nullcontext)
    if getattr(optimizer, "helper", None) is None:  # paddle 2.6 makes it in its first step (_create_optimization_pass)
        from paddle.base.layer_helper import LayerHelper

        optimizer.helper = LayerHelper(optimizer.__class__.__name__)
    with guard():
        optimizer._create_accumulators(block, list(parameters))


def apply_optimizer_state(optimizer, model, arrays, meta, source):
    """Create the accumulators of the saved parameters now (paddle would on the first step) and fill them,
    so a missing, unexpected or mis-shaped entry is refused here instead of surfacing mid-training."""

    params = {name: p for name, p in unwrap_model(model).named_parameters()}
    wanted = set()
    for key in arrays:
        param = key.rpartition("/")[0]
        if param not in params:
            raise CheckpointError(f"{source}: state for {param}, which is not a parameter of the model")
        wanted.add(param)
    if not wanted:
        return
    create_accumulators(optimizer, [p for name, p in params.items() if name in wanted])
    targets = {k: v for k, v in _optimizer_vars(optimizer, model).items() if k.rpartition("/")[0] in wanted}
    missing, unexpected = set(targets) - set(arrays), set(arrays) - set(targets)
    if missing or unexpected:
        raise CheckpointError(f"{source}: optimizer state does not match: "
                              + "; ".join(f"{what} {_name_list(keys)}" for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys))
    dtypes = meta.get("dtypes", {})
    for key, var in targets.items():
        array, want = arrays[key], str(var.dtype).replace("paddle.", "")
        if list(array.shape) != list(var.shape) or dtypes.get(key) != want:
            raise CheckpointError(f"{source}: {key} is {dtypes.get(key)} {list(array.shape)}, the optimizer has {want} {list(var.shape)}")
        var.set_value(array)


