"""Scaling: data parallelism (jit + NamedSharding, or pmap), multi-process runs and vmap ensembles."""

from jaxcnn.parallel.distributed import initialize_distributed, is_main_process
from jaxcnn.parallel.ensemble import (
    create_ensemble_state,
    ensemble_eval_step,
    ensemble_member,
    ensemble_predict,
    ensemble_size,
    ensemble_train_step,
    stack_states,
)
from jaxcnn.parallel.strategies import DataParallel, Pmap, SingleDevice, create_strategy

__all__ = [
    "DataParallel",
    "Pmap",
    "SingleDevice",
    "create_ensemble_state",
    "create_strategy",
    "ensemble_eval_step",
    "ensemble_member",
    "ensemble_predict",
    "ensemble_size",
    "ensemble_train_step",
    "initialize_distributed",
    "is_main_process",
    "stack_states",
]
