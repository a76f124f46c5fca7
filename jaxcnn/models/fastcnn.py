"""`fastcnn`: a wide, shallow VGG-style net that trains to high accuracy in few epochs.

After the network of Keller Jordan's airbench94 (CIFAR-10 to 94% in a few seconds on a GPU,
github.com/KellerJordan/cifar10-airbench): a 2x2 stem, then three groups of two 3x3 convolutions whose
first is followed by 2x2 max pooling, global max pooling and one linear layer with its logits scaled
by 1/9. Left out here: airbench's patch-whitening initialisation of the stem, frozen BatchNorm scales
and Lookahead. Wide layers at low resolution suit CPUs too: at 28x28x1 the default widths do 0.18 GFLOP
per image, three times ResNet-20, at about the same examples/s on 2 cores.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import check_images
from jaxcnn.models.registry import register


@register("fastcnn")
class FastCNN(nn.Module):
    """Stem conv 2x2 (VALID, bias) - GELU, then per width in `features`: conv 3x3 - max pool 2x2 - BN -
    GELU - conv 3x3 - BN - GELU; global max pool, dense (no bias) times `logit_scale`.

    With the default widths `(64, 256, 256)` and a 24-channel stem it has 1,972,600 parameters on
    1-channel images (1,972,792 on 3 channels), 2,304 of them BatchNorm scales and biases. Inputs at
    least `2 ** len(features) + 1` pixels on a side: the stem takes one, each pooling halves (rounding down).
    """

    num_classes: int = 10
    features: tuple[int, ...] = (64, 256, 256)
    stem_features: int = 24
    logit_scale: float = 1 / 9
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "fastcnn", min_size=2 ** len(self.features) + 1)
        norm = lambda: layers.BatchNorm(
            use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype
        )
        x = nn.gelu(layers.Conv(self.stem_features, 2, padding="VALID", dtype=self.dtype)(x))
        for features in self.features:
            x = layers.Conv(features, 3, use_bias=False, dtype=self.dtype)(x)
            x = nn.gelu(norm()(layers.MaxPool(2)(x)))
            x = nn.gelu(norm()(layers.Conv(features, 3, use_bias=False, dtype=self.dtype)(x)))
        x = layers.GlobalMaxPool()(x)
        logits = layers.Dense(self.num_classes, use_bias=False, dtype=self.dtype)(x)
        return self.logit_scale * logits.astype(jnp.float32)
