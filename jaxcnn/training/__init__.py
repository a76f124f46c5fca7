"""Training: build a run from a config, then run it.

- `config`: every key (`default_config`, `validate_config`); sections owned by the components below.
- `build`: `build_run(config, workdir)`, the only reader of a config, in named parts.
- `run`: `Run`, a built run: its `RunSpec` (fixed once built) and the state the loop moves.
- `loop`: `train(run)`, a short loop over steps that hands the periodic work to `actions`;
  `train_and_evaluate(config, workdir)` = build, then run; `profiling` (`config.profile`).
- The pieces, for notebooks: `state` (`TrainState`, `create_train_state` for NNX or Linen models),
  `steps` (pure train/eval steps and their wrappers), `ensemble`, `per_example` (DP-SGD), `optim`,
  `checkpoint`, `metrics`, `workdir`, `evaluation`, `model`, `result`.
"""

from jaxcnn.training.actions import Action, Evaluate, LogMetrics, SaveCheckpoint
from jaxcnn.training.build import build_run, initial_state
from jaxcnn.training.checkpoint import CheckpointError, Checkpoints, CheckpointSettings
from jaxcnn.training.config import default_config, resumable_keys, validate_config
from jaxcnn.training.ensemble import (
    EnsembleSettings,
    create_ensemble_state,
    ensemble_eval_step,
    ensemble_member,
    ensemble_predict,
    ensemble_size,
    ensemble_train_step,
    stack_states,
)
from jaxcnn.training.evaluation import EvalSettings, evaluate
from jaxcnn.training.finetune import FinetuneSettings
from jaxcnn.training.loop import train, train_and_evaluate
from jaxcnn.training.metrics import MetricWriter, read_metrics
from jaxcnn.training.model import ComputeSettings, create_model
from jaxcnn.training.optim import (
    OPTIMIZERS,
    SCHEDULES,
    OptimizerSettings,
    create_learning_rate_schedule,
    create_optimizer,
)
from jaxcnn.training.per_example import DPSettings, dp_optimizer, dp_train_step, per_example_grads
from jaxcnn.training.profiling import ProfileSettings
from jaxcnn.training.result import DataWorkerError, RunResult, TrainingInterrupted
from jaxcnn.training.run import Run, RunSpec
from jaxcnn.training.state import EMASettings, TrainState, create_train_state
from jaxcnn.training.steps import LossSettings, cross_entropy_loss, eval_step, predict, train_step
from jaxcnn.training.workdir import WorkdirError, prepare_workdir

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Action",
    "CheckpointError",
    "CheckpointSettings",
    "FinetuneSettings",
    "Checkpoints",
    "DataWorkerError",
    "ComputeSettings",
    "DPSettings",
    "EMASettings",
    "EnsembleSettings",
    "EvalSettings",
    "Evaluate",
    "LogMetrics",
    "LossSettings",
    "MetricWriter",
    "OptimizerSettings",
    "ProfileSettings",
    "Run",
    "RunResult",
    "RunSpec",
    "SaveCheckpoint",
    "TrainState",
    "TrainingInterrupted",
    "WorkdirError",
    "build_run",
    "create_ensemble_state",
    "create_learning_rate_schedule",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "cross_entropy_loss",
    "default_config",
    "dp_optimizer",
    "dp_train_step",
    "ensemble_eval_step",
    "ensemble_member",
    "ensemble_predict",
    "ensemble_size",
    "ensemble_train_step",
    "eval_step",
    "evaluate",
    "initial_state",
    "per_example_grads",
    "predict",
    "prepare_workdir",
    "read_metrics",
    "resumable_keys",
    "stack_states",
    "train",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]
