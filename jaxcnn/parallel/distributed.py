"""Multi-process runs: `jax.distributed` set-up, with gloo collectives for CPU processes."""

from __future__ import annotations

import jax

from jaxcnn._validate import integer


def initialize_distributed(
    coordinator_address: str, num_processes: int | None, process_id: int | None
) -> None:
    """Joins this process to a group of `num_processes` coordinated at `coordinator_address`.

    Must run before any other JAX call. CPU processes exchange collectives through gloo, so
    a group of local processes on 127.0.0.1 behaves like a group of hosts.
    """
    host, _, port = (coordinator_address or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    integer(num_processes, "num_processes (with coordinator_address)", minimum=1)
    integer(process_id, "process_id", minimum=0, maximum=num_processes - 1)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def is_main_process() -> bool:
    """True on process 0, the one that writes metrics, plots and the final report."""
    return jax.process_index() == 0
