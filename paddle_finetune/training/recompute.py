"""Activation checkpointing (`recompute=True`): each transformer block keeps only its inputs for the backward and
runs its forward again there (paddle's `recompute`), so peak memory holds one block's activations instead of
every block's, for about a third more compute.

The blocks are the elements of the model's `nn.LayerList`s (BART's encoder and decoder layers, BERT's, GPT's).
Each block's class is swapped for a subclass whose forward recomputes while gradients are on, so a
`copy.deepcopy` of the model recomputes too; in evaluation and generation the block runs as before.

The replay draws the same dropout masks as the forward: paddle's generator is restored by `recompute` itself
(preserve_rng_state), and the generator the fast CPU kernels draw their seeds from (`runtime.rng.dropout_rng`)
is rewound here to where it stood before the block's forward, then put back. Losses and gradients are the
forward's own.

Imports: the standard library; paddle inside the functions; of the project `runtime.rng`.
"""
from paddle_finetune.runtime import rng

_classes = {}


def _replaying(forward):
    """`forward`, whose second and later calls (recompute's replay) see the dropout generator as the first did."""
    before = {}

    def run(*tensors):
        if "state" not in before:
            before["state"] = rng.dropout_rng.bit_generator.state
            return forward(*tensors)
        now = rng.dropout_rng.bit_generator.state
        rng.dropout_rng.bit_generator.state = before["state"]
        try:
            return forward(*tensors)
        finally:
            rng.dropout_rng.bit_generator.state = now

    return run


def _recomputed(cls):
    """The subclass of `cls` whose forward runs under paddle's recompute when it trains."""
    if cls not in _classes:
        import paddle
        from paddle.distributed.fleet.utils import recompute

        base_forward = cls.forward

        def forward(self, *args, **kwargs):
            values = list(args) + list(kwargs.values())
            tensors = [i for i, v in enumerate(values) if isinstance(v, paddle.Tensor)]
            # Recompute only what trains: no cache (generation), gradients on, an input that needs them (the
            # reentrant recompute cannot reach the block's weights otherwise).
            if (not self.training or not paddle.is_grad_enabled() or kwargs.get("cache") is not None
                    or not any(not values[i].stop_gradient for i in tensors)):
                return base_forward(self, *args, **kwargs)

            def block(*inputs):  # the block with its tensors as the only positional inputs, as recompute wants
                filled = list(values)
                for i, t in zip(tensors, inputs):
                    filled[i] = t
                return base_forward(self, *filled[:len(args)], **dict(zip(kwargs, filled[len(args):])))

            return recompute(_replaying(block), *[values[i] for i in tensors], preserve_rng_state=True)

        _classes[cls] = type(cls.__name__, (cls,), {"forward": forward, "__doc__": cls.__doc__, "_recompute_base": cls})
    return _classes[cls]


def use_recompute(model):
    """Recompute every block of `model` (the elements of its LayerLists) in the backward. Returns how many."""
    import paddle

    count = 0
    for layer in model.sublayers(include_self=True):
        if isinstance(layer, paddle.nn.LayerList):
            for block in layer:
                if not hasattr(type(block), "_recompute_base"):
                    block.__class__ = _recomputed(type(block))
                    count += 1
    return count
