"""The train state: what the loop keeps between steps and a checkpoint carries (its trainer_state.json's
"train_state"; output_dir's trainer_state.json holds the same record). Older checkpoints' records load too:
keys they lack take the defaults, keys this version does not know are ignored.

Imports: the standard library only.
"""
import dataclasses
from typing import Any, Dict, Optional


@dataclasses.dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0  # the epoch the next micro-batch comes from
    position: int = 0  # micro-batches of that epoch already seen
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    best_checkpoint: Optional[str] = None  # "checkpoint-<step>", relative to output_dir
    metric_for_best: Optional[str] = None
    evals_without_improvement: int = 0
    world_size: int = 1
    wandb_run_id: Optional[str] = None
    amp_skipped_in_a_row: int = 0
    stopped_early_at: Optional[int] = None
    final_model_step: Optional[int] = None
    dev_fingerprint: Optional[str] = None  # the dev data the best was chosen on (checkpoints.resume.data_fingerprint)

    @classmethod
    def from_dict(cls, record: Dict[str, Any]) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (record or {}).items() if k in names})

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Window:
    """The steps since the last log line: their mean loss and tokens/s."""

    loss: float = 0.0
    steps: int = 0
    tokens: int = 0
    skipped: int = 0  # steps GradScaler skipped (inf/NaN gradients)
    start: float = 0.0


@dataclasses.dataclass
class Totals:
    """The steps this process trained (not those before a resume): all_results.json's train_* figures."""

    steps: int = 0
    loss: float = 0.0
    tokens: int = 0
    start: float = 0.0
