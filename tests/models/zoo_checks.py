"""Checks every model family's tests run: parameter counts without compute, the minimum input
size, bfloat16 compute, train/eval modes, and BatchNorm statistics synchronised over `axis_name`.

A check that varies an argument takes `make(**overrides)`, which builds the model's Linen form, e.g.
`functools.partial(models.create, "resnet20", num_classes=4)`."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util
from flax.core import FrozenDict

from jaxcnn import nnx_layers as L
from jaxcnn.models import LinenModel
from jaxcnn.models._common import conv_before_norm

KEY = jax.random.PRNGKey(0)
# Zoo models that run another zoo model's code at another depth or width (resnet50's Bottleneck ResNet for
# resnet101, resnet152 and wide_resnet50_2; wrn16_4's WideResNet for wrn28_10 and wrn40_4; densenet121's
# DenseNet, with the CIFAR stem's one 3x3 convolution, for densenet_bc_100_12): their counts are checked,
# their logits against PyTorch (test_torch_weights); the equivalence and export tests, which would only run
# the same operations more times, leave them out.
SIZES_OF_CHECKED_CODE = frozenset(
    {"resnet101", "resnet152", "wide_resnet50_2", "wrn28_10", "wrn40_4", "densenet_bc_100_12"}
)
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
    BatchNorm scales and variances): real `model.init` of these nets takes XLA tens of seconds.
    Drawn in float32: VGG's first dense layer alone holds 100M weights."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(variable_shapes(model, shape))
    values = {}
    for path, leaf in flat.items():
        if path[-1] in ("scale", "var"):
            value = rng.random(leaf.shape, np.float32)
            value += np.float32(0.5)
        else:
            value = rng.standard_normal(leaf.shape, np.float32)
            value *= np.float32(1 / math.sqrt(math.prod(leaf.shape[:-1])) if path[-1] == "kernel" else 0.1)
        values[path] = jnp.asarray(value, leaf.dtype)
    return traverse_util.unflatten_dict(values)


def linen(nnx_class, **kwargs) -> LinenModel:
    """The Linen form of a zoo class with arguments the registry does not take (e.g. VGG's `config`)."""
    return LinenModel(nnx_class, FrozenDict(kwargs))


def abstract(model: LinenModel, shape: tuple[int, ...]) -> nnx.Module:
    """The NNX model behind a zoo model's Linen form, for a batch of `shape`, without its weights."""
    return model.abstract_nnx_model(shape[1:])


def held(model: LinenModel, shape: tuple[int, ...], kind: type) -> list[nnx.Module]:
    """The modules of type `kind` in the model's NNX graph."""
    return [module for _, module in nnx.iter_graph(abstract(model, shape)) if isinstance(module, kind)]


def block_parts(rngs: nnx.Rngs) -> dict:
    """The `conv` and `norm` a zoo network hands its blocks, for building a block alone."""
    return {
        "conv": functools.partial(conv_before_norm, rngs=rngs),
        "norm": functools.partial(L.BatchNorm, rngs=rngs),
    }


def check_modes_and_dtype(make: Callable[..., LinenModel], shape: tuple[int, ...], num_classes: int) -> None:
    """Float32 logits `(N, num_classes)` in eval and train mode (where only the BatchNorm
    statistics change); bfloat16 compute (`make(dtype=jnp.bfloat16)`) keeps float32 parameters and
    logits. Traced, not run: the numbers are checked against PyTorch in test_torch_weights."""
    model = make()
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
    half = make(dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree.leaves(variable_shapes(half, shape))} == {jnp.dtype(jnp.float32)}
    assert jax.eval_shape(half.apply, variables, x).dtype == jnp.float32
    computing = {layer.dtype for layer in held(half, shape, (L.Conv, L.Dense, L.BatchNorm))}
    assert computing == {jnp.bfloat16}


def check_axis_name(make: Callable[..., LinenModel], shape: tuple[int, ...]) -> None:
    """Every BatchNorm of `make(axis_name=...)` gets the model's `axis_name`."""
    norms = held(make(axis_name="devices"), shape, L.BatchNorm)
    assert norms and all(norm.axis_name == "devices" for norm in norms)


def check_synchronised_batch_norm(make: Callable[..., LinenModel], shape: tuple[int, ...]) -> None:
    """In train mode under `vmap(axis_name="devices")` (as under pmap) the BatchNorm statistics
    are those of all shards: the logits equal those of the whole batch at once."""
    model, synced = make(), make(axis_name="devices")
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
