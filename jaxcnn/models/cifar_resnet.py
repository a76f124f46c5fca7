"""The CIFAR ResNets of He et al. (2016), section 4.2: resnet20 and resnet56.

A 3x3 convolution to 16 channels (no max pool), three stages of n basic blocks 16, 32 and 64
wide (strides 1, 2, 2), global average pooling and a dense layer: depth 6n + 2.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import is_int
from jaxcnn.models._common import check_images, conv_before_norm, image_shape
from jaxcnn.models.registry import register
from jaxcnn.models.resnet import BasicBlock, ResidualNetwork


class CifarResNet(ResidualNetwork):
    """ResNet-(6n+2) for 32x32 images: `(N, H, W, C)` -> logits `(N, num_classes)`.

    Args:
      depth: 6n + 2 layers (20, 32, 44, 56, 110, ...); n basic blocks per stage.
      shortcut: "A" (default, the paper's CIFAR choice): where a stage halves the resolution
        and doubles the width, the shortcut subsamples with stride 2 and appends zero channels,
        so shortcuts add no parameters: resnet20 has 269,722 parameters (0.27M, table 6 of
        the paper) and resnet56 853,018 (0.85M) at 10 classes. "B": a 1x1 convolution with
        stride 2 and BatchNorm on those shortcuts instead (resnet20: 272,474).
      widths: the stages' widths, (16, 32, 64) in the paper.
      remat: recompute each block's activations in the backward pass instead of keeping them
        (`nnx.remat`): less memory, the same gradients.

    Any input of at least 1x1 pixels (every convolution is padded); 32x32 in the paper. Feature maps:
    the stem's and each stage's (strides 1, 1, 2, 4).
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        *,
        input_shape: Sequence[int] = (32, 32, 3),
        shortcut: str = "A",
        widths: Sequence[int] = (16, 32, 64),
        zero_init_residual: bool = False,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if not is_int(depth) or depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"depth must be 6n + 2 for an int n >= 1 (8, 14, 20, 32, 56, ...), got {depth!r}"
            )
        self.input_shape = image_shape(input_shape, "CifarResNet")
        channels = self.input_shape[-1]
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.conv1, self.bn1 = conv(channels, widths[0], 3), norm(widths[0])
        stage_sizes = ((depth - 2) // 6,) * len(widths)
        self._init_stages(
            widths[0], BasicBlock, stage_sizes, widths, num_classes, dtype=dtype, remat=remat, rngs=rngs,
            conv=conv, norm=norm, shortcut=shortcut, zero_init_residual=zero_init_residual,
        )  # fmt: skip

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "CifarResNet", min_size=1)
        stem = jax.nn.relu(self.bn1(self.conv1(x)))
        return [stem, *self.stage_maps(stem)]


ResNet20 = register("resnet20", functools.partial(CifarResNet, depth=20))
ResNet56 = register("resnet56", functools.partial(CifarResNet, depth=56))
