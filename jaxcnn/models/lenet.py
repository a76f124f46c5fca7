"""LeNet-5 (LeCun et al., 1998), with modern defaults: ReLU and max pooling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import ZooModel, check_images, image_shape, output_shape, pool_impl
from jaxcnn.models.registry import register


@register("lenet5")
class LeNet5(ZooModel):
    """conv 5x5x6 (pad 2) - pool - conv 5x5x16 - pool - dense 120 - dense 84 - dense classes.

    On 28x28x1 inputs (padding 2 keeps the first maps at 28x28, as the original's 32x32) it
    has 61,706 parameters. `pool="avg"` and `activation=jnp.tanh` give the original's
    subsampling and squashing. Inputs at least 12x12; `input_shape` sizes the first dense layer.
    Feature maps: each conv-pool stage's (strides 2, 4).
    """

    head_name = "fc3"

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        activation: Callable[[jax.Array], jax.Array] = jax.nn.relu,
        pool: str = "max",
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.input_shape = image_shape(input_shape, "lenet5", min_size=12)
        channels = self.input_shape[-1]
        if pool not in ("max", "avg"):
            raise ValueError(f'pool must be "max" or "avg", got {pool!r}')
        conv = partial(L.Conv, dtype=dtype, impl=impl, rngs=rngs)
        dense = partial(L.Dense, dtype=dtype, rngs=rngs)
        self.activation = activation
        self.conv1 = conv(channels, 6, 5, padding=2)
        self.pool1 = L.MaxPool(2, impl=pool_impl(impl)) if pool == "max" else L.AvgPool(2)
        self.conv2 = conv(6, 16, 5, padding="VALID")
        self.pool2 = L.MaxPool(2, impl=pool_impl(impl)) if pool == "max" else L.AvgPool(2)
        self.flatten = L.Flatten()
        flat = math.prod(output_shape(lambda x: self.feature_maps(x)[-1], input_shape))
        self.fc1, self.fc2, self.fc3 = dense(flat, 120), dense(120, 84), dense(84, num_classes)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "lenet5", min_size=12)
        first = self.pool1(self.activation(self.conv1(x)))
        return [first, self.pool2(self.activation(self.conv2(first)))]

    def forward_head(self, x: jax.Array) -> jax.Array:
        x = self.activation(self.fc1(self.flatten(x)))
        x = self.activation(self.fc2(x))
        return self.fc3(x).astype(jnp.float32)
