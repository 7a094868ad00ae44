"""The optimizer and its schedule: paddle's AdamW (no decay on biases and norm weights), LinearDecayWithWarmup
and ClipGradByGlobalNorm.

Imports: paddle and paddlenlp inside build_optimizer.
"""

# ----------------------------------------------------------------------------
# optimizer and schedule
# ----------------------------------------------------------------------------
def resolve_warmup(config):
    """A positive warmup_steps wins over warmup_proportion (LinearDecayWithWarmup takes either)."""
    return int(config["warmup_steps"]) if config.get("warmup_steps", 0) > 0 else float(config["warmup_proportion"])


def no_decay_param_names(model):
    """Biases and norm weights are not decayed: decaying a LayerNorm scale towards 0 only hurts."""
    return {p.name for n, p in model.named_parameters() if "bias" in n or "norm" in n.lower() or "ln" in n.split(".")}


def build_optimizer(model, config, num_training_steps):
    import paddle
    from paddlenlp.transformers import LinearDecayWithWarmup

    lr_scheduler = LinearDecayWithWarmup(config["learning_rate"], num_training_steps, resolve_warmup(config))
    no_decay = no_decay_param_names(model)
    optimizer = paddle.optimizer.AdamW(
        learning_rate=lr_scheduler,
        epsilon=config["adam_epsilon"],
        parameters=model.parameters(),
        weight_decay=config["weight_decay"],
        apply_decay_param_fun=lambda name: name not in no_decay,
        grad_clip=paddle.nn.ClipGradByGlobalNorm(config["max_grad_norm"]) if config.get("max_grad_norm", 0) > 0 else None,
    )
    return optimizer, lr_scheduler
