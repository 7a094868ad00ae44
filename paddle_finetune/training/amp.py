"""Mixed precision: AMP is a GPU feature (paddle.amp.auto_cast does nothing on CPU), and float16 training
that has stopped learning (every step skipped, or the loss scale below 1) is stopped with a reason.

Imports: of the project `errors` and `reporting`.
"""
from paddle_finetune.errors import ConfigError
from paddle_finetune.reporting.console import warn_once


def resolve_amp(config, device):
    """(use_amp, amp_dtype). AMP is a GPU feature: on CPU paddle.amp.auto_cast is a no-op, so say so once and run fp32."""
    dtype = config.get("amp_dtype", "float16")
    if dtype not in ("float16", "bfloat16"):
        raise ConfigError(f"amp_dtype must be 'float16' or 'bfloat16', got {dtype!r}")
    if config.get("use_amp") and device != "gpu":
        warn_once("use_amp=True ignored: AMP needs a GPU (paddle.amp.auto_cast does nothing on CPU); training in fp32")
        return False, dtype
    return bool(config.get("use_amp")), dtype


# float16 AMP: GradScaler skips a step whose gradients hold inf/NaN and lowers the loss scale. BART is known to
# overflow in fp16; a run whose every step is skipped would "train" for hours and save the initial weights.
AMP_MAX_SKIPPED_STEPS = 50


def amp_step_skipped(scaler):
    """Whether GradScaler skipped the step it just took (inf/NaN gradients). Always False when it is off (CPU, bf16)."""
    if not scaler.is_enable():
        return False
    found = getattr(scaler, "_cache_found_inf", None)  # set by GradScaler.step in paddle 2.6 and 3.x
    return bool(found) if found is not None else False


def loss_scale(scaler):
    return float(scaler.state_dict()["scale"]) if scaler.is_enable() else None


def skipped_in_a_row(count, skipped):
    return count + 1 if skipped else 0


def amp_stop_reason(in_a_row, scale, max_skipped=AMP_MAX_SKIPPED_STEPS):
    """None while float16 training can go on, else why it cannot."""
    if in_a_row >= max_skipped:
        return f"GradScaler skipped the last {in_a_row} steps (inf/NaN gradients in float16)"
    if scale is not None and scale < 1.0:
        return f"the float16 loss scale fell to {scale:g}, below 1"
    return None
