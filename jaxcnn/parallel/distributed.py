"""Multi-process runs: `jax.distributed` set-up, with gloo collectives for CPU processes."""

from __future__ import annotations

import jax


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
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(
            f"num_processes must be a positive int with coordinator_address, got {num_processes!r}"
        )
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"process_id must be in [0, {num_processes}), got {process_id!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def is_main_process() -> bool:
    """True on process 0, the one that writes metrics, plots and the final report."""
    return jax.process_index() == 0
