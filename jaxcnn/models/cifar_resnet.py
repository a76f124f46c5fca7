"""The CIFAR ResNets of He et al. (2016), section 4.2: resnet20 and resnet56.

A 3x3 convolution to 16 channels (no max pool), three stages of n basic blocks 16, 32 and 64
wide (strides 1, 2, 2), global average pooling and a dense layer: depth 6n + 2.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax

from jaxcnn.models._common import batch_norm, check_images, conv_before_norm
from jaxcnn.models.registry import register
from jaxcnn.models.resnet import BasicBlock, stages_and_classifier


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 images: `(N, H, W, C)` -> logits `(N, num_classes)`.

    Attributes:
      depth: 6n + 2 layers (20, 32, 44, 56, 110, ...); n basic blocks per stage.
      shortcut: "A" (default, the paper's CIFAR choice): where a stage halves the resolution
        and doubles the width, the shortcut subsamples with stride 2 and appends zero channels,
        so shortcuts add no parameters: resnet20 has 269,722 parameters (0.27M, table 6 of
        the paper) and resnet56 853,018 (0.85M) at 10 classes. "B": a 1x1 convolution with
        stride 2 and BatchNorm on those shortcuts instead (resnet20: 272,474).
      widths: the stages' widths, (16, 32, 64) in the paper.

    Any input of at least 1x1 pixels (every convolution is padded); 32x32 in the paper.
    """

    depth: int = 20
    num_classes: int = 10
    shortcut: str = "A"
    widths: tuple[int, int, int] = (16, 32, 64)
    zero_init_residual: bool = False
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "CifarResNet", min_size=1)
        depth = self.depth
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"depth must be 6n + 2 for an int n >= 1 (8, 14, 20, 32, 56, ...), got {depth!r}"
            )
        x = conv_before_norm(self, self.widths[0], 3, name="conv1")(x)
        x = nn.relu(batch_norm(self, train, name="bn1")(x))
        stage_sizes = ((depth - 2) // 6,) * len(self.widths)
        return stages_and_classifier(self, x, BasicBlock, stage_sizes, train, shortcut=self.shortcut)


ResNet20 = register("resnet20", functools.partial(CifarResNet, depth=20))
ResNet56 = register("resnet56", functools.partial(CifarResNet, depth=56))
