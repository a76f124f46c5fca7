"""VGG (Simonyan and Zisserman, 2015) in torchvision's layout: vgg11, vgg16, vgg11_bn, vgg16_bn.

Stacks of 3x3 convolutions (padding 1) and 2x2 max pools, adaptive average pooling to 7x7, and
a classifier of three dense layers (4096, 4096, classes) with ReLU and dropout 0.5.
Module names: `conv{k}` and `bn{k}` for the k-th convolution (from 1), `fc1`..`fc3`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import batch_norm, check_images, conv_kernel_init, dense_kernel_init
from jaxcnn.models.registry import register

# torchvision's configurations: an int is a 3x3 convolution of that width, "M" a 2x2 max pool.
VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
POOLED_SIZE = 7  # the adaptive pool's output, 7x7 as torchvision's


class VGG(nn.Module):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    Attributes:
      config: the feature extractor, e.g. `VGG11_LAYERS`: ints are 3x3 convolutions (ReLU after),
        "M" 2x2 max pools.
      batch_norm: BatchNorm after each convolution (the `_bn` variants). The convolutions keep
        their bias, as in torchvision.
      dropout: rate of the two dropout layers in the classifier.

    Inputs at least `2 ** (number of pools)` pixels on a side (32x32 for vgg11/vgg16), so the
    last pool still has a cell; the adaptive pool then brings any size to 7x7 (224x224 gives
    exactly 7x7). At 224x224x3 and 1000 classes vgg11 has 132,863,336 parameters and vgg16
    138,357,544, as torchvision's (vgg11_bn 132,868,840, vgg16_bn 138,365,992).
    """

    config: Sequence[int | str]
    num_classes: int = 1000
    batch_norm: bool = False
    dropout: float = 0.5
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if any(v != "M" and (isinstance(v, bool) or not isinstance(v, int) or v < 1) for v in self.config):
            raise ValueError(
                f'config must hold positive ints (conv widths) and "M" (max pools), got {self.config!r}'
            )
        check_images(x, "VGG", min_size=2 ** self.config.count("M"))
        convs = 0
        for v in self.config:
            if v == "M":
                x = layers.MaxPool(2)(x)
                continue
            convs += 1
            conv = layers.Conv(
                v, 3, padding=1, kernel_init=conv_kernel_init, dtype=self.dtype, name=f"conv{convs}"
            )
            x = conv(x)
            if self.batch_norm:
                x = batch_norm(self, train, name=f"bn{convs}")(x)
            x = nn.relu(x)
        x = layers.Flatten()(layers.AdaptiveAvgPool(POOLED_SIZE)(x))
        dense = functools.partial(layers.Dense, kernel_init=dense_kernel_init, dtype=self.dtype)
        for k in (1, 2):
            x = nn.relu(dense(4096, name=f"fc{k}")(x))
            x = layers.Dropout(self.dropout)(x, deterministic=not train)
        return dense(self.num_classes, name="fc3")(x).astype(jnp.float32)


VGG11 = register("vgg11", functools.partial(VGG, config=VGG11_LAYERS))
VGG16 = register("vgg16", functools.partial(VGG, config=VGG16_LAYERS))
VGG11BN = register("vgg11_bn", functools.partial(VGG, config=VGG11_LAYERS, batch_norm=True))
VGG16BN = register("vgg16_bn", functools.partial(VGG, config=VGG16_LAYERS, batch_norm=True))
