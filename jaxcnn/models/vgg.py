"""VGG (Simonyan and Zisserman, 2015) in torchvision's layout: vgg11, vgg16, vgg11_bn, vgg16_bn.

Stacks of 3x3 convolutions (padding 1) and 2x2 max pools, adaptive average pooling to 7x7, and
a classifier of three dense layers (4096, 4096, classes) with ReLU and dropout 0.5.
Module names: `conv{k}` and `bn{k}` for the k-th convolution (from 1), `pool{m}` for the m-th max pool,
`fc1`..`fc3`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import is_int
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    check_images,
    conv_kernel_init,
    dense_kernel_init,
    image_shape,
    pool_impl,
)
from jaxcnn.models.registry import register

# torchvision's configurations: an int is a 3x3 convolution of that width, "M" a 2x2 max pool.
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
POOLED_SIZE = 7  # the adaptive pool's output, 7x7 as torchvision's


class VGG(ZooModel):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    Args:
      config: the feature extractor, e.g. `VGG11_LAYERS`: ints are 3x3 convolutions (ReLU after),
        "M" 2x2 max pools.
      batch_norm: BatchNorm after each convolution (the `_bn` variants). The convolutions keep
        their bias, as in torchvision.
      dropout: rate of the two dropout layers in the classifier.

    Inputs at least `2 ** (number of pools)` pixels on a side (32x32 for vgg11/vgg16), so the
    last pool still has a cell; the adaptive pool then brings any size to 7x7 (224x224 gives
    exactly 7x7). At 224x224x3 and 1000 classes vgg11 has 132,863,336 parameters and vgg16
    138,357,544, as torchvision's (vgg11_bn 132,868,840, vgg16_bn 138,365,992). Feature maps: the output
    of each max pool (strides 2, 4, 8, 16, 32).
    """

    head_name = "fc3"

    def __init__(
        self,
        config: Sequence[int | str],
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        batch_norm: bool = False,
        dropout: float = 0.5,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        if any(v != "M" and not (is_int(v) and int(v) >= 1) for v in config):
            raise ValueError(
                f'config must hold positive ints (conv widths) and "M" (max pools), got {config!r}'
            )
        self.config, self.batch_norm = tuple(config), batch_norm
        self.min_size = 2 ** self.config.count("M")
        self.input_shape = image_shape(input_shape, "VGG", min_size=self.min_size)
        channels = self.input_shape[-1]
        conv = functools.partial(
            L.Conv, padding=1, kernel_init=conv_kernel_init, dtype=dtype, impl=impl, rngs=rngs
        )
        layers: list[tuple[str, nnx.Module]] = []
        activated, convs, pools = [], 0, 0
        for v in self.config:
            if isinstance(v, str):  # "M", the only string the check above lets through
                pools += 1
                layers.append((f"pool{pools}", L.MaxPool(2, impl=pool_impl(impl))))
                continue
            convs += 1
            layers.append((f"conv{convs}", conv(channels, v, 3)))
            if batch_norm:
                layers.append((f"bn{convs}", L.BatchNorm(v, axis_name=axis_name, dtype=dtype, rngs=rngs)))
            activated.append(layers[-1][0])  # ReLU after the convolution, or after its BatchNorm
            channels = v
        self.layer_names, self.activated = add_layers(self, layers), frozenset(activated)
        self.avgpool, self.flatten = L.AdaptiveAvgPool(POOLED_SIZE), L.Flatten()
        dense = functools.partial(L.Dense, kernel_init=dense_kernel_init, dtype=dtype, rngs=rngs)
        self.fc1 = dense(channels * POOLED_SIZE**2, 4096)
        self.dropout1 = L.Dropout(dropout, rngs=rngs)
        self.fc2 = dense(4096, 4096)
        self.dropout2 = L.Dropout(dropout, rngs=rngs)
        self.fc3 = dense(4096, num_classes)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "VGG", min_size=self.min_size)
        maps = []
        for name in self.layer_names:
            x = getattr(self, name)(x)
            if name in self.activated:
                x = jax.nn.relu(x)
            elif name.startswith("pool"):
                maps.append(x)
        return maps if self.layer_names[-1].startswith("pool") else [*maps, x]

    def forward_head(self, x: jax.Array) -> jax.Array:
        x = self.flatten(self.avgpool(x))
        x = self.dropout1(jax.nn.relu(self.fc1(x)))
        x = self.dropout2(jax.nn.relu(self.fc2(x)))
        return self.fc3(x).astype(jnp.float32)


VGG11 = register("vgg11", functools.partial(VGG, config=VGG11_LAYERS))
VGG16 = register("vgg16", functools.partial(VGG, config=VGG16_LAYERS))
VGG11BN = register("vgg11_bn", functools.partial(VGG, config=VGG11_LAYERS, batch_norm=True))
VGG16BN = register("vgg16_bn", functools.partial(VGG, config=VGG16_LAYERS, batch_norm=True))
