"""Scaling: data parallelism (jit + NamedSharding, or pmap) and multi-process runs.

How a step runs on the devices (a strategy: placement of the state and the batch, compilation) is
here; what a step computes, ensembles (`vmap` over members) included, is in `jaxcnn.training`.
"""

from jaxcnn.parallel.distributed import initialize_distributed, is_main_process
from jaxcnn.parallel.strategies import STRATEGIES, DataParallel, Pmap, SingleDevice, create_strategy, register

__all__ = [
    "STRATEGIES",
    "DataParallel",
    "Pmap",
    "SingleDevice",
    "create_strategy",
    "initialize_distributed",
    "is_main_process",
    "register",
]
