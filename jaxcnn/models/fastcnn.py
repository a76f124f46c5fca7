"""`fastcnn`: a wide, shallow VGG-style net that trains to high accuracy in few epochs.

After the network of Keller Jordan's airbench94 (CIFAR-10 to 94% in a few seconds on a GPU,
github.com/KellerJordan/cifar10-airbench): a 2x2 stem, then three groups of two 3x3 convolutions whose
first is followed by 2x2 max pooling, global max pooling and one linear layer with its logits scaled
by 1/9. Left out here: airbench's patch-whitening initialisation of the stem, frozen BatchNorm scales
and Lookahead. At 28x28x1 the default widths do 0.18 GFLOP per image, three times ResNet-20, in wide
layers that run near a CPU's peak: about half ResNet-20's examples/s on 2 cores.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import ZooModel, add_layers, check_images, image_shape, pool_impl
from jaxcnn.models.registry import register


class ConvGroup(nnx.Module):
    """conv 3x3 - max pool 2x2 - BN - GELU - conv 3x3 - BN - GELU.

    `(N, H, W, in_features)` -> `(N, H // 2, W // 2, features)`.
    """

    def __init__(self, in_features: int, features: int, *, conv: Callable, norm: Callable, impl: str):
        self.conv1, self.pool = conv(in_features, features, 3), L.MaxPool(2, impl=pool_impl(impl))
        self.bn1, self.conv2, self.bn2 = norm(features), conv(features, features, 3), norm(features)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = jax.nn.gelu(self.bn1(self.pool(self.conv1(x))))
        return jax.nn.gelu(self.bn2(self.conv2(x)))


@register("fastcnn")
class FastCNN(ZooModel):
    """Stem conv 2x2 (VALID, bias) - GELU, then a `ConvGroup` per width in `features` (`group1`, ...);
    global max pool, dense (no bias) times `logit_scale`.

    With the default widths `(64, 256, 256)` and a 24-channel stem it has 1,972,600 parameters on
    1-channel images (1,972,792 on 3 channels), 2,304 of them BatchNorm scales and biases. Inputs at
    least `2 ** len(features) + 1` pixels on a side: the stem takes one, each pooling halves (rounding down).
    Feature maps: the stem's and each group's (strides 1, 2, 4, 8).
    """

    def __init__(
        self,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        features: Sequence[int] = (64, 256, 256),
        stem_features: int = 24,
        logit_scale: float = 1 / 9,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        self.min_size, self.logit_scale = 2 ** len(features) + 1, logit_scale
        self.input_shape = image_shape(input_shape, "fastcnn", min_size=self.min_size)
        channels = self.input_shape[-1]
        conv = functools.partial(L.Conv, use_bias=False, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.stem = L.Conv(channels, stem_features, 2, padding="VALID", dtype=dtype, impl=impl, rngs=rngs)
        widths = (stem_features, *features)
        groups = [
            (f"group{i}", ConvGroup(widths[i - 1], widths[i], conv=conv, norm=norm, impl=impl))
            for i in range(1, len(widths))
        ]
        self.group_names = add_layers(self, groups)
        self.pool = L.GlobalMaxPool()
        self.fc = L.Dense(widths[-1], num_classes, use_bias=False, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "fastcnn", min_size=self.min_size)
        maps = [jax.nn.gelu(self.stem(x))]
        for name in self.group_names:
            maps.append(getattr(self, name)(maps[-1]))
        return maps

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.logit_scale * self.fc(self.pool(x)).astype(jnp.float32)
