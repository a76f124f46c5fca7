"""The all-convolutional net (Springenberg et al., 2015, "Striving for Simplicity", All-CNN-C)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import ZooModel, add_layers, check_images, image_shape
from jaxcnn.models.registry import register


@register("allconv")
class AllConvNet(ZooModel):
    """All-CNN-C: every pooling layer replaced by a 3x3 convolution with stride 2.

    Two stages of [3x3, 3x3, 3x3 stride 2] convolutions (`features` channels each), then
    3x3 valid, 1x1, and a 1x1 convolution to `num_classes` maps averaged by global pooling:
    no dense layer at all. Dropout on the input and after each downsampling, as in the paper.
    The paper's widths are (96, 192). Inputs at least 9x9. Modules: `input_dropout`, `conv1`..`conv9`,
    `dropout1`, `dropout2`. Feature maps: each stage's output (after its dropout) and the last 1x1
    convolution's before the class maps (strides 2, 4, 4); the head is the class-map convolution and the
    pooling.
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        features: Sequence[int] = (96, 192),
        input_dropout: float = 0.2,
        dropout: float = 0.5,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.input_shape = image_shape(input_shape, "allconv", min_size=9)
        channels = self.input_shape[-1]
        conv = functools.partial(L.Conv, dtype=dtype, impl=impl, rngs=rngs)
        self.input_dropout = L.Dropout(input_dropout, rngs=rngs)
        layers: list[tuple[str, nnx.Module]] = []
        k = 0
        for stage, width in enumerate(features, start=1):
            for stride in (1, 1, 2):
                k += 1
                layers.append((f"conv{k}", conv(channels, width, 3, stride=stride)))
                channels = width
            layers.append((f"dropout{stage}", L.Dropout(dropout, rngs=rngs)))
        for kernel, width, padding in (
            (3, channels, "VALID"),
            (1, channels, "SAME"),
            (1, num_classes, "SAME"),
        ):
            k += 1
            layers.append((f"conv{k}", conv(channels, width, kernel, padding=padding)))
            channels = width
        self.layer_names = add_layers(self, layers)
        self.head_name = self.layer_names[-1]  # the 1x1 convolution to the class maps
        self.pool = L.GlobalAvgPool()

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "allconv", min_size=9)
        x, maps = self.input_dropout(x), []
        for name in self.layer_names[:-1]:
            x = getattr(self, name)(x)
            if name.startswith("conv"):
                x = jax.nn.relu(x)
            else:  # a stage's dropout
                maps.append(x)
        return [*maps, x]

    def forward_head(self, x: jax.Array) -> jax.Array:
        x = getattr(self, self.head_name)(x)  # the class maps: no ReLU
        return self.pool(x).astype(jnp.float32)
