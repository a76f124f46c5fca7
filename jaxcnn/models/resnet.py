"""ResNets for ImageNet (He et al., 2016) in torchvision's layout: resnet18, resnet34, resnet50.

The bottleneck block strides on its 3x3 convolution (torchvision's "v1.5"), convolutions before
BatchNorm have no bias, and module names follow torchvision's (`conv1`, `bn1`, `layer2_0`,
`downsample_conv`, `fc`), so `jaxcnn.models.load_torch_state_dict` maps its weights one to one.
The blocks and the network after the stem are shared with the CIFAR ResNets of
`jaxcnn.models.cifar_resnet`. As in Flax's ImageNet example, a network builds its convolution and
normalisation once (`conv`, `norm`: partials holding dtype, lowering, cross-device axis and RNG) and
hands them to its blocks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import (
    add_layers,
    check_images,
    conv_before_norm,
    image_shape,
    torch_linear_init,
)
from jaxcnn.models.registry import register

SHORTCUTS = ("A", "B")


class ResidualBlock(nnx.Module):
    """What the basic and bottleneck blocks share: the shortcut and the last BatchNorm's init.

    Args:
      in_features: the input's channels.
      features: the block's width; its output has `features * expansion` channels.
      stride: of the block's first strided convolution (and of the shortcut).
      conv: `conv(in_features, features, kernel, stride=1)` -> a convolution before a BatchNorm.
      norm: `norm(features, **kwargs)` -> a BatchNorm.
      shortcut: how the shortcut matches a changed shape: "B" a 1x1 convolution with stride and
        BatchNorm (torchvision, the paper's ImageNet choice), "A" parameter-free: subsampling by
        `stride` and zero channels appended (the paper's CIFAR choice). Same shape: identity.
      zero_init_residual: start the last BatchNorm's scale at zero, so each block begins as
        the identity (Goyal et al., 2017).
    """

    expansion: ClassVar[int] = 1

    def _init_shortcut(self, in_features: int, stride: int, conv: Callable, norm: Callable, shortcut: str):
        if shortcut not in SHORTCUTS:
            raise ValueError(f'shortcut must be "A" or "B", got {shortcut!r}')
        out_features = self.out_features
        self.stride, self.extra_channels = stride, 0
        self.projection = shortcut == "B" and (stride != 1 or in_features != out_features)
        if self.projection:
            self.downsample_conv = conv(in_features, out_features, 1, stride)
            self.downsample_bn = norm(out_features)
        elif stride != 1 or in_features != out_features:
            if out_features < in_features:
                raise ValueError(
                    f'shortcut "A" can only add channels, got {in_features} -> {out_features} features'
                )
            self.extra_channels = out_features - in_features

    @staticmethod
    def last_norm_kwargs(zero_init_residual: bool) -> dict:
        """The residual branch's last BatchNorm starts with scale 0 if `zero_init_residual`."""
        return {"scale_init": nnx.initializers.zeros_init()} if zero_init_residual else {}

    def residual(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """`relu(y + shortcut(x))` where `y` is the residual branch's output."""
        if self.projection:
            x = self.downsample_bn(self.downsample_conv(x))
        elif self.stride != 1 or self.extra_channels:
            x = x[:, :: self.stride, :: self.stride, :]
            extra = self.extra_channels
            x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return jax.nn.relu(y + x)


class BasicBlock(ResidualBlock):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU.

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int = 1,
        *,
        conv: Callable,
        norm: Callable,
        shortcut: str = "B",
        zero_init_residual: bool = False,
    ):
        self.out_features = features
        self.conv1, self.bn1 = conv(in_features, features, 3, stride), norm(features)
        self.conv2 = conv(features, features, 3)
        self.bn2 = norm(features, **self.last_norm_kwargs(zero_init_residual))
        self._init_shortcut(in_features, stride, conv, norm, shortcut)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        return self.residual(x, self.bn2(self.conv2(y)))


class Bottleneck(ResidualBlock):
    """1x1 conv-BN-ReLU, 3x3 conv (with the stride)-BN-ReLU, 1x1 conv to `4 * features`-BN,
    plus the shortcut, then ReLU.

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), 4 * features)`.
    """

    expansion: ClassVar[int] = 4

    def __init__(
        self,
        in_features: int,
        features: int,
        stride: int = 1,
        *,
        conv: Callable,
        norm: Callable,
        shortcut: str = "B",
        zero_init_residual: bool = False,
    ):
        self.out_features = features * self.expansion
        self.conv1, self.bn1 = conv(in_features, features, 1), norm(features)
        self.conv2, self.bn2 = conv(features, features, 3, stride), norm(features)
        self.conv3 = conv(features, self.out_features, 1)
        self.bn3 = norm(self.out_features, **self.last_norm_kwargs(zero_init_residual))
        self._init_shortcut(in_features, stride, conv, norm, shortcut)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = jax.nn.relu(self.bn2(self.conv2(y)))
        return self.residual(x, self.bn3(self.conv3(y)))


class ResidualNetwork(nnx.Module):
    """What every ResNet does after its stem: stages of residual blocks, global average pooling and
    the dense layer `fc`. Stage i has `stage_sizes[i]` blocks of width `widths[i]`, named
    `layer{i+1}_{j}` as torchvision's `layer{i+1}.{j}`; every stage but the first halves the resolution
    in its first block. Subclasses build a stem, call `_init_stages`, and end their call with `stages`.
    """

    def _init_stages(
        self,
        in_features: int,
        block: type[ResidualBlock],
        stage_sizes: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        *,
        dtype: Any,
        rngs: nnx.Rngs,
        **block_kwargs,
    ) -> None:
        if len(stage_sizes) != len(widths):
            raise ValueError(
                f"stage_sizes {tuple(stage_sizes)} and widths {tuple(widths)} must have the same length"
            )
        blocks = []
        for i, (size, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append((f"layer{i + 1}_{j}", block(in_features, width, stride, **block_kwargs)))
                in_features = blocks[-1][1].out_features
        self.block_names = add_layers(self, blocks)
        self.pool = L.GlobalAvgPool()
        self.fc = L.Dense(in_features, num_classes, kernel_init=torch_linear_init, dtype=dtype, rngs=rngs)

    def stages(self, x: jax.Array) -> jax.Array:
        """The blocks, pooling and `fc`: float32 logits `(N, num_classes)`."""
        for name in self.block_names:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x)).astype(jnp.float32)


class ResNet(ResidualNetwork):
    """ResNet for ImageNet-sized images: 7x7/2 conv-BN-ReLU, 3x3/2 max pool, four stages of
    residual blocks (64, 128, 256, 512 wide, strides 1, 2, 2, 2), global average pool, dense.

    `(N, H, W, C)` -> logits `(N, num_classes)`; any input of at least 1x1 pixels (every window
    is padded), 224x224 as in the paper. At 224x224x3 and 1000 classes resnet18 has 11,689,512
    parameters, resnet34 21,797,672 and resnet50 25,557,032, as torchvision's.
    """

    def __init__(
        self,
        stage_sizes: Sequence[int],
        block: type[ResidualBlock],
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        zero_init_residual: bool = False,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        channels = image_shape(input_shape, "ResNet")[-1]
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.conv1, self.bn1 = conv(channels, widths[0], 7, stride=2), norm(widths[0])
        self.maxpool = L.MaxPool(3, stride=2, padding=1, impl=impl)
        self._init_stages(
            widths[0], block, stage_sizes, widths, num_classes, dtype=dtype, rngs=rngs,
            conv=conv, norm=norm, zero_init_residual=zero_init_residual,
        )  # fmt: skip

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, "ResNet", min_size=1)
        x = self.maxpool(jax.nn.relu(self.bn1(self.conv1(x))))
        return self.stages(x)


ResNet18 = register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock))
ResNet34 = register("resnet34", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock))
ResNet50 = register("resnet50", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck))
