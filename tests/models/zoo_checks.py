"""Checks every model family's tests run: parameter counts without compute, the minimum input
size, bfloat16 compute, train/eval modes, and BatchNorm statistics synchronised over `axis_name`."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxcnn import layers

KEY = jax.random.PRNGKey(0)
RNGS = {"params": KEY, "dropout": jax.random.PRNGKey(1)}


def variable_shapes(model: nn.Module, shape: tuple[int, ...]) -> dict:
    """The model's variables as shapes: `model.init` traced, not run."""
    return jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def param_count(model: nn.Module, shape: tuple[int, ...]) -> int:
    return count(variable_shapes(model, shape)["params"])


def random_images(shape: tuple[int, ...], seed: int = 0) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def check_minimum_size(model: nn.Module, label: str, minimum: int, channels: int = 3) -> None:
    """`minimum` x `minimum` works; one pixel less on either side raises a ValueError naming it."""
    variable_shapes(model, (1, minimum, minimum, channels))
    for shape in [(1, minimum - 1, minimum + 3, channels), (1, minimum + 3, minimum - 1, channels)]:
        with pytest.raises(ValueError, match=f"{label} needs inputs of at least {minimum}x{minimum}"):
            variable_shapes(model, shape)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        variable_shapes(model, (minimum, minimum, channels))


def fake_variables(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> dict:
    """Variables of the right shapes filled with numpy draws (kernels of variance 1/fan_in, unit
    BatchNorm scales and variances): real `model.init` of these nets takes XLA tens of seconds."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variable_shapes(model, shape))
    values = {}
    for path, leaf in flat.items():
        if path[-1] == "kernel":
            value = rng.standard_normal(leaf.shape) / math.sqrt(math.prod(leaf.shape[:-1]))
        elif path[-1] in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, leaf.shape)
        else:
            value = rng.standard_normal(leaf.shape) * 0.1
        values[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(values)


def called(model: nn.Module, shape: tuple[int, ...], kind: type, **kwargs) -> list[nn.Module]:
    """The modules of type `kind` that a forward pass calls (traced, not run)."""
    modules = []

    def record(next_fun, args, call_kwargs, context):
        if isinstance(context.module, kind) and context.method_name == "__call__":
            modules.append(context.module)
        return next_fun(*args, **call_kwargs)

    def init(x):
        with nn.intercept_methods(record):
            return model.init(RNGS, x, **kwargs)

    jax.eval_shape(init, jax.ShapeDtypeStruct(shape, jnp.float32))
    return modules


def check_modes_and_dtype(model: nn.Module, shape: tuple[int, ...], num_classes: int) -> None:
    """Float32 logits `(N, num_classes)` in eval and train mode (where only the BatchNorm
    statistics change); bfloat16 compute keeps float32 parameters and logits. Traced, not run:
    the numbers are checked against PyTorch in test_torch_weights."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = variable_shapes(model, shape)
    logits = jax.eval_shape(model.apply, variables, x)
    assert logits.shape == (shape[0], num_classes) and logits.dtype == jnp.float32
    train = lambda v, x: model.apply(v, x, train=True, rngs=RNGS, mutable=["batch_stats"])
    logits, updates = jax.eval_shape(train, variables, x)
    assert logits.shape == (shape[0], num_classes) and logits.dtype == jnp.float32
    assert jax.tree.map(lambda a: a.shape, updates) == jax.tree.map(
        lambda a: a.shape, {k: v for k, v in variables.items() if k != "params"}
    )
    half = model.clone(dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(variable_shapes(half, shape))} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(half.apply, variables, x).dtype == jnp.float32
    computing = {layer.dtype for layer in called(half, shape, (layers.Conv, layers.Dense, layers.BatchNorm))}
    assert computing == {jnp.bfloat16}


def check_axis_name(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Every BatchNorm the model calls gets the model's `axis_name`."""
    norms = called(model.clone(axis_name="devices"), shape, layers.BatchNorm)
    assert norms and all(norm.axis_name == "devices" for norm in norms)


def check_synchronised_batch_norm(model: nn.Module, shape: tuple[int, ...]) -> None:
    """In train mode under `vmap(axis_name="devices")` (as under pmap) the BatchNorm statistics
    are those of all shards: the logits equal those of the whole batch at once."""
    synced = model.clone(axis_name="devices")
    with jax.enable_x64(True):  # deep nets in train mode on tiny batches amplify float32 rounding
        x = random_images(shape).astype(jnp.float64)
        variables = jax.tree.map(lambda a: a.astype(jnp.float64), fake_variables(model, shape))
        whole = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0])(variables, x)
        per_shard = jax.vmap(
            lambda xs: synced.apply(variables, xs, train=True, mutable=["batch_stats"])[0],
            axis_name="devices",
        )
        sharded = jax.jit(per_shard)(x.reshape(2, shape[0] // 2, *shape[1:]))
    np.testing.assert_allclose(sharded.reshape(whole.shape), whole, rtol=1e-7, atol=1e-7)
