"""train_utils.py, the engine's pure parts: warmup schedule, optimizer groups, step count, device and AMP."""
import pytest

from paddle_finetune.runtime import state
from paddle_finetune.errors import ConfigError
from paddle_finetune.runtime.environment import setup_device
from paddle_finetune.training.amp import AMP_MAX_SKIPPED_STEPS, amp_step_skipped, amp_stop_reason, loss_scale, resolve_amp, skipped_in_a_row
from paddle_finetune.training.loop import compute_max_steps
from paddle_finetune.training.optimization import build_optimizer, no_decay_param_names, resolve_warmup
def _lrs(config, total):
    import paddle

    model = paddle.nn.Linear(2, 2)
    _, sched = build_optimizer(model, {**config, "adam_epsilon": 1e-8, "weight_decay": 0.0, "max_grad_norm": 1.0}, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append(sched.get_lr())
        sched.step()
    return lrs


def test_warmup_proportion_then_linear_decay():
    lrs = _lrs({"learning_rate": 1.0, "warmup_steps": 0, "warmup_proportion": 0.2}, 10)
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.5) and lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.5) and lrs[10] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_positive_warmup_steps_win_over_proportion():
    lrs = _lrs({"learning_rate": 2.0, "warmup_steps": 4, "warmup_proportion": 0.5}, 20)
    assert lrs[4] == pytest.approx(2.0) and lrs[2] == pytest.approx(1.0)
    assert resolve_warmup({"warmup_steps": 4, "warmup_proportion": 0.5}) == 4
    assert resolve_warmup({"warmup_steps": 0, "warmup_proportion": 0.5}) == 0.5


def test_no_weight_decay_on_bias_and_norm():
    import paddle

    class Tiny(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.proj = paddle.nn.Linear(4, 4)
            self.layer_norm = paddle.nn.LayerNorm(4)

    model = Tiny()
    names = {n for n, p in model.named_parameters() if p.name in no_decay_param_names(model)}
    assert names == {"proj.bias", "layer_norm.weight", "layer_norm.bias"}



def test_max_steps_from_epochs_and_accumulation():
    assert compute_max_steps({"gradient_accumulation_steps": 2, "max_steps": -1, "num_train_epochs": 3}, 11) == (18, 6)
    assert compute_max_steps({"gradient_accumulation_steps": 1, "max_steps": 5, "num_train_epochs": 3}, 11) == (5, 11)


# ---------------------------------------------------------------------------- device and AMP
def test_gpu_request_without_cuda_is_a_clear_error_and_auto_picks_cpu():
    import paddle

    if paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="device='gpu'.*paddlepaddle-gpu.*--device=cpu"):
        setup_device("gpu")
    assert setup_device("auto") == "cpu" and paddle.get_device() == "cpu"
    with pytest.raises(ConfigError, match="device must be"):
        setup_device("tpu")


def test_amp_on_cpu_warns_once_and_runs_fp32(capsys):
    state.current().warned.clear()
    assert resolve_amp({"use_amp": True, "amp_dtype": "float16"}, "cpu") == (False, "float16")
    assert resolve_amp({"use_amp": True, "amp_dtype": "float16"}, "cpu") == (False, "float16")
    assert capsys.readouterr().out.count("use_amp=True ignored") == 1
    assert resolve_amp({"use_amp": True, "amp_dtype": "bfloat16"}, "gpu") == (True, "bfloat16")
    with pytest.raises(ConfigError, match="amp_dtype"):
        resolve_amp({"use_amp": True, "amp_dtype": "int8"}, "gpu")


# ---------------------------------------------------------------------------- fp16 AMP that cannot learn
def replay_found_inf(flags, scales=None, max_skipped=AMP_MAX_SKIPPED_STEPS):
    """The loop's decision over a sequence of GradScaler found-inf flags: the 1-based step it stops at, or None."""
    in_a_row = 0
    for step, skipped in enumerate(flags, start=1):
        in_a_row = skipped_in_a_row(in_a_row, skipped)
        if amp_stop_reason(in_a_row, scales[step - 1] if scales else 2.0**15, max_skipped):
            return step
    return None


def test_amp_stops_after_50_skipped_steps_in_a_row():
    assert replay_found_inf([True] * 49) is None
    assert replay_found_inf([True] * 50) == 50
    # one good step resets the count: 49 skipped, a good one, 49 skipped never stops
    assert replay_found_inf([True] * 49 + [False] + [True] * 49) is None
    assert replay_found_inf([False] * 10 + [True] * 60) == 60


def test_amp_stops_when_the_loss_scale_falls_below_one():
    assert replay_found_inf([True, False, True], scales=[4.0, 1.0, 0.5]) == 3
    assert amp_stop_reason(0, None) is None  # no scaler (fp32, bf16): never
    assert "bfloat16" not in amp_stop_reason(50, 1.0)  # the advice is in the engine's error, which names the step
    assert "below 1" in amp_stop_reason(0, 0.25)


def test_grad_scaler_off_on_cpu_never_reports_a_skip():
    import paddle

    paddle.set_device("cpu")
    scaler = paddle.amp.GradScaler(enable=True)
    assert not scaler.is_enable() and amp_step_skipped(scaler) is False and loss_scale(scaler) is None


def test_a_train_state_written_before_the_package_move_loads_unchanged():
    """The record a pre-package checkpoint holds (trainer_state.json's "train_state", written by the flat-module
    version) loads into TrainState with every value kept, and the keys it lacks take their defaults; resuming
    such a checkpoint was checked end to end against an uninterrupted run (identical checkpoint-4 weights)."""
    from paddle_finetune.training.state import TrainState

    old = {"global_step": 2, "epoch": 0, "position": 2, "best_metric": 4.7727, "best_step": 2, "best_checkpoint": "checkpoint-2",
           "metric_for_best": "rougeL", "evals_without_improvement": 0, "world_size": 1, "amp_skipped_in_a_row": 0}
    state = TrainState.from_dict({**old, "a_key_from_the_future": 1})
    assert {k: v for k, v in state.to_dict().items() if k in old} == old
    assert state.wandb_run_id is None and state.stopped_early_at is None and state.final_model_step is None
    assert TrainState.from_dict(state.to_dict()) == state
