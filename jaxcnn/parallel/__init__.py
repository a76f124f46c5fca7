"""Scaling: data parallelism (jit + NamedSharding, or pmap) and multi-process runs."""

from jaxcnn.parallel.distributed import initialize_distributed, is_main_process
from jaxcnn.parallel.strategies import DataParallel, Pmap, SingleDevice, create_strategy

__all__ = [
    "DataParallel",
    "Pmap",
    "SingleDevice",
    "create_strategy",
    "initialize_distributed",
    "is_main_process",
]
