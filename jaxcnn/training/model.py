"""The model a run trains: a registered model, built in its own API (NNX for the zoo), from the seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from flax import nnx

from jaxcnn import functional, models
from jaxcnn._validate import Settings, boolean, choice
from jaxcnn.training.state import initial_keys

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ComputeSettings(Settings):
    """`config.compute`: how the model computes (never what: parameters stay float32).

    Attributes:
      dtype: "float32", or "bfloat16" / "float16" for mixed precision (activations and products in that
        dtype, parameters and logits in float32).
      impl: how the convolutions are lowered, for models that take `impl` (every zoo model): one of
        `jaxcnn.functional.CONV_IMPLS`, "auto" (jaxcnn's rule per layer), "onednn", "xla", "im2col",
        "im2col_grad" or "tap_grad" (`jaxcnn.functional.conv`'s `impl`). The max pools follow it
        (`models._common.pool_impl`): "xla" puts them on plain `lax` too (the whole model as plain Flax
        lowers it), every other value leaves them on "auto".
      remat: recompute each block's activations in the backward pass instead of keeping them
        (`nnx.remat` per block, for the models of blocks that take `remat`: the ResNets, WideResNets,
        MobileNetV2, EfficientNet, ConvNeXt, DenseNet): less activation memory for about one more
        forward pass, the same gradients (resnet50 at 224: 0.23x the residuals,
        `experiments/remat_memory.py`). It pays on GPUs and TPUs: XLA:CPU drops the barriers that keep
        the recomputation apart and compiles the same step either way. A model without blocks refuses it
        (`model_arguments`).

    Raises:
      ValueError: a value not listed here, naming the key.
      TypeError: a `remat` that is not True or False.
    """

    dtype: str = "float32"
    impl: str = "auto"
    remat: bool = False

    def __post_init__(self):
        choice(self.dtype, "dtype", DTYPES)
        choice(self.impl, "impl", functional.CONV_IMPLS)
        boolean(self.remat, "remat")


def model_arguments(
    name: str, compute: ComputeSettings, model_kwargs: Mapping[str, Any], axis_name: str | None = None
) -> dict[str, Any]:
    """Keyword arguments of `models.create_nnx(name, ...)` (or `create`): `model_kwargs`, the compute dtype
    and lowering, and `axis_name` for models with BatchNorm (cross-device statistics), each passed only
    to a model that takes it; `remat=True` for `compute.remat`.

    Raises:
      ValueError: `compute.remat` for a model that takes no `remat` (one without blocks), naming those
        that do.
    """
    accepted = models.arguments(name)
    kwargs = dict(model_kwargs)
    if DTYPES[compute.dtype] is not None:
        kwargs["dtype"] = DTYPES[compute.dtype]
    if compute.impl != "auto" and "impl" in accepted:
        kwargs["impl"] = compute.impl
    if axis_name is not None and "axis_name" in accepted:
        kwargs["axis_name"] = axis_name
    if compute.remat:
        if "remat" not in accepted:
            blocks = [model for model in models.available() if "remat" in models.arguments(model)]
            raise ValueError(
                f"config.compute.remat: model {name!r} has no blocks to recompute (it takes no remat); "
                f"models that do: {', '.join(blocks)}"
            )
        kwargs["remat"] = True
    return kwargs


def create_model(
    name: str,
    num_classes: int,
    image_shape: Sequence[int],
    seed: int,
    *,
    compute: ComputeSettings = ComputeSettings(),
    model_kwargs: Mapping[str, Any] = {},  # noqa: B006 - read only
    axis_name: str | None = None,
) -> nnx.Module | nn.Module:
    """The registered model `name` for images of `image_shape` `(H, W, C)`: an NNX module initialised from
    `seed` (the zoo's models), or a Linen module (a model registered as one) that `create_train_state`
    initialises from the same seed."""
    kwargs = model_arguments(name, compute, model_kwargs, axis_name)
    if not models.is_nnx(name):
        return models.create(name, num_classes=num_classes, **kwargs)
    init_key, dropout_key, _ = initial_keys(seed)
    rngs = nnx.Rngs(params=init_key, dropout=dropout_key)
    return models.create_nnx(
        name, num_classes=num_classes, input_shape=tuple(image_shape), rngs=rngs, **kwargs
    )
