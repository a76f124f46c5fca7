"""LeNet-5 (LeCun et al., 1998), with modern defaults: ReLU and max pooling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import check_images
from jaxcnn.models.registry import register


@register("lenet5")
class LeNet5(nn.Module):
    """conv 5x5x6 (pad 2) - pool - conv 5x5x16 - pool - dense 120 - dense 84 - dense classes.

    On 28x28x1 inputs (padding 2 keeps the first maps at 28x28, as the original's 32x32) it
    has 61,706 parameters. `pool="avg"` and `activation=jnp.tanh` give the original's
    subsampling and squashing. Inputs at least 12x12.
    """

    num_classes: int = 10
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    pool: str = "max"
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "lenet5", min_size=12)
        if self.pool not in ("max", "avg"):
            raise ValueError(f'pool must be "max" or "avg", got {self.pool!r}')
        pool = layers.MaxPool if self.pool == "max" else layers.AvgPool
        x = pool(2)(self.activation(layers.Conv(6, 5, padding=2, dtype=self.dtype)(x)))
        x = pool(2)(self.activation(layers.Conv(16, 5, padding="VALID", dtype=self.dtype)(x)))
        x = layers.Flatten()(x)
        x = self.activation(layers.Dense(120, dtype=self.dtype)(x))
        x = self.activation(layers.Dense(84, dtype=self.dtype)(x))
        return layers.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)
