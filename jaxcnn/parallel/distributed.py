"""Multi-process runs: joining a process group (`jax.distributed`), with gloo collectives for CPU processes.

A group is formed in one of three ways (`join_process_group`): from the cluster environment the process
runs in (SLURM, Open MPI, Kubernetes, TPU pods: JAX's own detection, as `jax.distributed.initialize()`
with no arguments), from explicit coordinator arguments, or not at all (one process).
"""

from __future__ import annotations

import jax

from jaxcnn._validate import choice, integer

DISTRIBUTED_MODES = ("auto", "off")


def _use_gloo() -> None:
    """CPU processes exchange collectives through gloo (accelerators use their own)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def initialize_distributed(
    coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
    """Joins this process to a group of `num_processes` coordinated at `coordinator_address`.

    Must run before any other JAX call. CPU processes exchange collectives through gloo, so
    a group of local processes on 127.0.0.1 behaves like a group of hosts.
    """
    host, _, port = (coordinator_address or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator_address must be HOST:PORT, got {coordinator_address!r}")
    num_processes = integer(num_processes, "num_processes (with coordinator_address)", minimum=1)
    integer(process_id, "process_id", minimum=0, maximum=num_processes - 1)
    _use_gloo()
    jax.distributed.initialize(
        coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
    )


def detected_cluster() -> str | None:
    """The cluster environment `jax.distributed.initialize()` finds, in JAX's order ("slurm", "ompi",
    "gketpu", "gcetpu", "k8s"), or None outside one. Kubernetes needs the `kubernetes` package
    (`jax[k8s]`) and a pod allowed to read its JobSet; MPI through mpi4py is opt-in, as in JAX."""
    from jax._src import clusters  # JAX names the environment it detects nowhere public

    for env in clusters.ClusterEnv._cluster_types:
        if not env.opt_in_only_method and env.is_env_present():
            return env.name or env.__name__.removesuffix("Cluster").lower()
    return None


def join_process_group(
    mode: str = "auto",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> str:
    """Joins this process to its group, before any other JAX call, and returns a line saying how.

    Explicit coordinator arguments win; else `mode="auto"` joins the group of the cluster environment
    JAX detects (`detected_cluster`), and `"off"` (or no cluster) runs one process.
    """
    choice(mode, "distributed", DISTRIBUTED_MODES)
    explicit = (coordinator_address, num_processes, process_id) != (None, None, None)
    if explicit and mode == "off":
        raise ValueError("distributed 'off' contradicts coordinator_address/num_processes/process_id")
    cluster = None if explicit or mode == "off" else detected_cluster()
    if explicit:
        initialize_distributed(coordinator_address, num_processes, process_id)
        how = f"explicit coordinator {coordinator_address}"
    elif cluster:
        _use_gloo()
        jax.distributed.initialize()
        how = f"{cluster} cluster environment"
    else:
        how = "one process" + (" (distributed off)" if mode == "off" else " (no cluster environment)")
    return (
        f"process group: {how}; process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local of {jax.device_count()} {jax.default_backend()} devices"
    )


def is_main_process() -> bool:
    """True on process 0, the one that writes metrics, plots and the final report."""
    return jax.process_index() == 0
