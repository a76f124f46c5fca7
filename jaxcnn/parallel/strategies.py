"""How a train step runs on the devices: one device, `jit` with a sharded batch (and state), or `pmap`.

A strategy places the state and each process's share of a batch on its devices and compiles
the step functions for them. `host_state` is the layout checkpoints are saved from and restored
into: the plain state, as global arrays when there are several processes (Orbax saves and restores
collectively), so a run can resume under another strategy or device count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxcnn._registry import Registry

AXIS = "batch"
STRATEGIES: Registry[type[SingleDevice]] = Registry("parallel strategy")
register = STRATEGIES.register

Tree = Any  # a pytree of arrays: a train state, a batch, metrics
# fn(state, accumulated_metrics, batch) -> (state, accumulated_metrics)
TrainFn = Callable[..., tuple[Any, Any]]
# fn(state, batch) -> metrics
EvalFn = Callable[..., Any]


def _check_divisible(global_batch: int, devices: int, name: str) -> None:
    if global_batch % devices:
        raise ValueError(
            f"{name} {global_batch} must be divisible by the number of devices ({devices}) "
            "for data-parallel training; pick a multiple, e.g. "
            f"{max(devices, global_batch // devices * devices)}"
        )


@register("none")
class SingleDevice:
    """`jit` on the default device (`parallel="none"`)."""

    name = "none"
    axis_name: str | None = None
    num_devices = 1

    def check_batch_size(self, global_batch: int, name: str = "batch_size") -> None:
        if jax.process_count() > 1:
            raise ValueError(
                'parallel="none" runs on one process; use parallel="data" or "pmap" with several'
            )

    def put_state(self, state: Tree) -> Tree:
        return jax.device_put(state)

    def put_batch(self, batch: dict[str, np.ndarray]) -> Tree:
        """`batch` on the default device. The host's CPU is that device itself: there the compiled step
        reads the numpy arrays where they lie (a `device_put` would copy them, at ~30 us an array of
        Python overhead), so they must not change until the step is done: `data`'s batches are new
        arrays each time."""
        if jax.default_backend() == "cpu":
            return batch
        return jax.device_put(batch)

    def host_state(self, state: Tree) -> Tree:
        return state

    def host_value(self, value: Tree) -> Tree:
        return jax.device_get(value)

    def compile_train(self, fn: TrainFn) -> TrainFn:
        return jax.jit(fn, donate_argnums=(0, 1))

    def compile_eval(self, fn: EvalFn) -> EvalFn:
        return jax.jit(fn)


@register("data")
class DataParallel(SingleDevice):
    """`jit` over a 1-D mesh of every device of every process (`parallel="data"`).

    The batch is sharded along the mesh axis `batch`; parameters, optimizer state and
    BatchNorm statistics are replicated. The model code is unchanged: XLA inserts the
    gradient all-reduce, and BatchNorm's batch mean is over the global batch.
    """

    name = "data"

    def __init__(self, devices: Sequence[jax.Device] | None = None):
        mesh_devices = np.asarray(jax.devices() if devices is None else devices)
        self.mesh = Mesh(mesh_devices, (AXIS,))
        self.num_devices = mesh_devices.size
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self.sharded = NamedSharding(self.mesh, PartitionSpec(AXIS))

    def check_batch_size(self, global_batch: int, name: str = "batch_size") -> None:
        _check_divisible(global_batch, self.num_devices, name)

    def put_state(self, state: Tree) -> Tree:
        return jax.device_put(state, self.replicated)

    def put_batch(self, batch: dict[str, np.ndarray]) -> Tree:
        return jax.tree.map(lambda a: jax.make_array_from_process_local_data(self.sharded, a), batch)

    def compile_train(self, fn: TrainFn) -> TrainFn:
        return jax.jit(
            fn,
            in_shardings=(self.replicated, self.replicated, self.sharded),
            out_shardings=(self.replicated, self.replicated),
            donate_argnums=(0, 1),
        )

    def compile_eval(self, fn: EvalFn) -> EvalFn:
        return jax.jit(fn, in_shardings=(self.replicated, self.sharded), out_shardings=self.replicated)


def largest_divisible_axis(shape: tuple[int, ...], devices: int) -> int | None:
    """The largest axis of `shape` whose size `devices` divides (the first of equal ones), or None."""
    divisible = [axis for axis, size in enumerate(shape) if size % devices == 0 and size >= devices]
    return max(divisible, key=lambda axis: shape[axis], default=None)


@register("fsdp")
class FullySharded(DataParallel):
    """`jit` over a 1-D mesh of every device, with the state sharded too (`parallel="fsdp"`).

    As "data", the batch is sharded along the mesh axis `batch`; parameters, optimizer state and
    BatchNorm statistics are sharded along the same axis, each array on its largest axis the device
    count divides (replicated if none does: biases of odd sizes, scalars). XLA gathers each layer's
    parameters where the step needs them and reduce-scatters their gradients, so each device holds
    about 1/devices of the state. The model code is unchanged, and so is what a step computes.
    """

    name = "fsdp"

    def sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        """Where an array of `shape` of the state lives: see the class docstring."""
        axis = largest_divisible_axis(shape, self.num_devices)
        if axis is None:
            return self.replicated
        return NamedSharding(
            self.mesh, PartitionSpec(*[AXIS if a == axis else None for a in range(len(shape))])
        )

    def shardings(self, tree: Tree) -> Tree:
        return jax.tree.map(lambda leaf: self.sharding(np.shape(leaf)), tree)

    def put_state(self, state: Tree) -> Tree:
        return jax.device_put(state, self.shardings(state))

    def host_value(self, value: Tree) -> Tree:
        """`value` on this host in full: the shards of every process gathered."""
        return multihost_utils.process_allgather(value, tiled=True)

    def compile_train(self, fn: TrainFn) -> TrainFn:
        def step(state, metric_sums, batch):  # the new state keeps the layout of the state
            return jax.lax.with_sharding_constraint(
                fn(state, metric_sums, batch), self.shardings((state, metric_sums))
            )

        return jax.jit(step, donate_argnums=(0, 1))  # the inputs' shardings: state and batch as put

    def compile_eval(self, fn: EvalFn) -> EvalFn:
        return jax.jit(fn, out_shardings=self.replicated)


@register("pmap")
class Pmap(SingleDevice):
    """`pmap` over the local devices, axis name `batch` (`parallel="pmap"`).

    The step averages gradients with `pmean` and adds metric sums with `psum`; models with
    BatchNorm get `axis_name="batch"`, so their statistics are synchronised across devices.
    """

    name = "pmap"
    axis_name = AXIS

    def __init__(self):
        devices = np.asarray(jax.local_devices())
        self.local_devices = devices.size
        self.num_devices = jax.device_count()
        self.stacked = NamedSharding(Mesh(devices, (AXIS,)), PartitionSpec(AXIS))

    def check_batch_size(self, global_batch: int, name: str = "batch_size") -> None:
        _check_divisible(global_batch, self.num_devices, name)

    def put_state(self, state: Tree) -> Tree:
        """One copy per local device, stacked on a new leading axis."""
        stacked = jax.tree.map(lambda a: np.broadcast_to(a, (self.local_devices, *np.shape(a))), state)
        return jax.device_put(stacked, self.stacked)

    def put_batch(self, batch: dict[str, np.ndarray]) -> Tree:
        """`(B_local, ...)` -> `(local devices, B_local / local devices, ...)`, one row per device."""
        n = self.local_devices
        return jax.device_put(
            jax.tree.map(lambda a: a.reshape(n, a.shape[0] // n, *a.shape[1:]), batch), self.stacked
        )

    def host_state(self, state: Tree) -> Tree:
        """Device 0's copy; with several processes a global replicated array, which Orbax can save."""
        first = jax.tree.map(lambda a: a[0], state)
        if jax.process_count() == 1:
            return first
        everywhere = NamedSharding(Mesh(np.asarray(jax.devices()), (AXIS,)), PartitionSpec())
        to_global = lambda a: jax.make_array_from_process_local_data(everywhere, np.asarray(a))
        return jax.tree.map(to_global, first)

    def host_value(self, value: Tree) -> Tree:
        return jax.device_get(jax.tree.map(lambda a: a[0], value))

    def compile_train(self, fn: TrainFn) -> TrainFn:
        return jax.pmap(fn, axis_name=AXIS, donate_argnums=(0, 1))

    def compile_eval(self, fn: EvalFn) -> EvalFn:
        return jax.pmap(fn, axis_name=AXIS)


def create_strategy(parallel: str) -> SingleDevice:
    """The strategy registered as `parallel` (`config.parallel`): "none", "data", "fsdp", "pmap", or your own
    (`jaxcnn.parallel.register("name")` on a class with the methods of `SingleDevice`)."""
    return STRATEGIES.get(parallel)()
