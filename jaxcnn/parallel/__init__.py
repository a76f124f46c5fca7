"""Scaling: data parallelism (jit + NamedSharding, or pmap), sharded state (fsdp) and multi-process runs.

How a step runs on the devices (a strategy: placement of the state and the batch, compilation) is
here; what a step computes, ensembles (`vmap` over members) included, is in `jaxcnn.training`.
"""

from jaxcnn.parallel.distributed import (
    DISTRIBUTED_MODES,
    detected_cluster,
    initialize_distributed,
    is_main_process,
    join_process_group,
)
from jaxcnn.parallel.strategies import (
    STRATEGIES,
    DataParallel,
    FullySharded,
    Pmap,
    SingleDevice,
    create_strategy,
    register,
)

__all__ = [
    "DISTRIBUTED_MODES",
    "STRATEGIES",
    "DataParallel",
    "FullySharded",
    "Pmap",
    "SingleDevice",
    "create_strategy",
    "detected_cluster",
    "initialize_distributed",
    "is_main_process",
    "join_process_group",
    "register",
]
