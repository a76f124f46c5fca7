"""Training: config, train state, optimizers, jitted steps, checkpoints and the loop."""

from jaxcnn.training.checkpoint import CheckpointError, Checkpoints
from jaxcnn.training.config import default_config, validate_config
from jaxcnn.training.loop import (
    RunResult,
    TrainingInterrupted,
    create_model,
    evaluate,
    initial_state,
    train_and_evaluate,
)
from jaxcnn.training.metrics import MetricWriter, read_metrics
from jaxcnn.training.optim import create_learning_rate_schedule, create_optimizer
from jaxcnn.training.per_example import dp_optimizer, dp_train_step, per_example_grads
from jaxcnn.training.state import TrainState, create_train_state
from jaxcnn.training.steps import cross_entropy_loss, eval_step, predict, train_step
from jaxcnn.training.workdir import WorkdirError, prepare_workdir

__all__ = [
    "CheckpointError",
    "Checkpoints",
    "MetricWriter",
    "RunResult",
    "TrainState",
    "TrainingInterrupted",
    "WorkdirError",
    "create_learning_rate_schedule",
    "create_model",
    "create_optimizer",
    "create_train_state",
    "cross_entropy_loss",
    "default_config",
    "dp_optimizer",
    "dp_train_step",
    "eval_step",
    "evaluate",
    "initial_state",
    "per_example_grads",
    "predict",
    "prepare_workdir",
    "read_metrics",
    "train_and_evaluate",
    "train_step",
    "validate_config",
]
