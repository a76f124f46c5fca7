"""ResNets for ImageNet (He et al., 2016) in torchvision's layout: resnet18, resnet34, resnet50, resnet101,
resnet152, and the ResNeXt (Xie et al., 2017) and wide (Zagoruyko and Komodakis, 2016) variants
resnext50_32x4d and wide_resnet50_2, whose bottlenecks are grouped or wider.

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
from jaxcnn._validate import boolean
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    call_block,
    check_images,
    conv_before_norm,
    image_shape,
    pool_impl,
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
    out_features: int  # set by each block's __init__, before _init_shortcut

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

    `(N, H, W, in_features)` -> `(N, ceil(H / stride), ceil(W / stride), features)`. Neither grouped nor
    widened (`groups` 1 and `width_per_group` 64 only, as torchvision's).
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
        groups: int = 1,
        width_per_group: int = 64,
    ):
        if (groups, width_per_group) != (1, 64):
            raise ValueError(
                f"BasicBlock takes groups=1 and width_per_group=64 only, got {groups} and {width_per_group}"
            )
        self.out_features = features
        self.conv1, self.bn1 = conv(in_features, features, 3, stride), norm(features)
        self.conv2 = conv(features, features, 3)
        self.bn2 = norm(features, **self.last_norm_kwargs(zero_init_residual))
        self._init_shortcut(in_features, stride, conv, norm, shortcut)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        return self.residual(x, self.bn2(self.conv2(y)))


class Bottleneck(ResidualBlock):
    """1x1 conv-BN-ReLU, 3x3 conv (with the stride and `groups`)-BN-ReLU, 1x1 conv to `4 * features`-BN,
    plus the shortcut, then ReLU. The inner width is `features * width_per_group / 64 * groups`
    (torchvision's): `features` for ResNet, twice that for resnext50_32x4d (32 groups of 4 channels per
    64) and wide_resnet50_2 (`width_per_group` 128).

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
        groups: int = 1,
        width_per_group: int = 64,
    ):
        self.out_features = features * self.expansion
        width = int(features * (width_per_group / 64)) * groups
        self.conv1, self.bn1 = conv(in_features, width, 1), norm(width)
        self.conv2, self.bn2 = conv(width, width, 3, stride, groups=groups), norm(width)
        self.conv3 = conv(width, self.out_features, 1)
        self.bn3 = norm(self.out_features, **self.last_norm_kwargs(zero_init_residual))
        self._init_shortcut(in_features, stride, conv, norm, shortcut)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jax.nn.relu(self.bn1(self.conv1(x)))
        y = jax.nn.relu(self.bn2(self.conv2(y)))
        return self.residual(x, self.bn3(self.conv3(y)))


class ResidualNetwork(ZooModel):
    """What every ResNet does after its stem: stages of residual blocks, global average pooling and
    the dense layer `fc`. Stage i has `stage_sizes[i]` blocks of width `widths[i]`, named
    `layer{i+1}_{j}` as torchvision's `layer{i+1}.{j}`; every stage but the first halves the resolution
    in its first block, and each block runs under `nnx.remat` when `remat` (`_common.call_block`).
    Subclasses build a stem, call `_init_stages`, and give their feature maps as the stem's output
    followed by `stage_maps`.
    """

    def _init_stages(
        self,
        in_features: int,
        block: Callable[..., ResidualBlock],  # a subclass: nnx.Module's own __init__ takes nothing
        stage_sizes: Sequence[int],
        widths: Sequence[int],
        num_classes: int,
        *,
        dtype: Any,
        remat: bool,
        rngs: nnx.Rngs,
        **block_kwargs,
    ) -> None:
        if len(stage_sizes) != len(widths):
            raise ValueError(
                f"stage_sizes {tuple(stage_sizes)} and widths {tuple(widths)} must have the same length"
            )
        blocks, self.stage_sizes, self.remat = [], tuple(stage_sizes), boolean(remat, "remat")
        for i, (size, width) in enumerate(zip(stage_sizes, widths, strict=True)):
            for j in range(size):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append((f"layer{i + 1}_{j}", block(in_features, width, stride, **block_kwargs)))
                in_features = blocks[-1][1].out_features
        self.block_names = add_layers(self, blocks)
        self.pool = L.GlobalAvgPool()
        self.fc = L.Dense(in_features, num_classes, kernel_init=torch_linear_init, dtype=dtype, rngs=rngs)

    def stage_maps(self, x: jax.Array) -> list[jax.Array]:
        """The output of each stage of blocks (`layer1`, `layer2`, ...)."""
        maps, names = [], iter(self.block_names)
        for size in self.stage_sizes:
            for _ in range(size):
                x = call_block(getattr(self, next(names)), x, self.remat)
            maps.append(x)
        return maps

    def forward_head(self, x: jax.Array) -> jax.Array:
        """Global average pooling and `fc`: float32 logits `(N, num_classes)`."""
        return self.fc(self.pool(x)).astype(jnp.float32)


class ResNet(ResidualNetwork):
    """ResNet for ImageNet-sized images: 7x7/2 conv-BN-ReLU, 3x3/2 max pool, four stages of
    residual blocks (64, 128, 256, 512 wide, strides 1, 2, 2, 2), global average pool, dense.

    `(N, H, W, C)` -> logits `(N, num_classes)`; any input of at least 1x1 pixels (every window
    is padded), 224x224 as in the paper. At 224x224x3 and 1000 classes resnet18 has 11,689,512
    parameters, resnet34 21,797,672, resnet50 25,557,032, resnet101 44,549,160, resnet152 60,192,808,
    resnext50_32x4d 25,028,904 and wide_resnet50_2 68,883,240, as torchvision's. Feature maps: the stem's
    (after its ReLU, stride 2) and each stage's (strides 4, 8, 16, 32), as timm's.

    Args:
      groups, width_per_group: of the bottleneck's 3x3 convolution (see `Bottleneck`).
      remat: recompute each block's activations in the backward pass instead of keeping them
        (`nnx.remat`): less memory, the same gradients.
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
        groups: int = 1,
        width_per_group: int = 64,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        self.input_shape = image_shape(input_shape, "ResNet")
        channels = self.input_shape[-1]
        conv = functools.partial(conv_before_norm, dtype=dtype, impl=impl, rngs=rngs)
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        self.conv1, self.bn1 = conv(channels, widths[0], 7, stride=2), norm(widths[0])
        self.maxpool = L.MaxPool(3, stride=2, padding=1, impl=pool_impl(impl))
        self._init_stages(
            widths[0], block, stage_sizes, widths, num_classes, dtype=dtype, remat=remat, rngs=rngs,
            conv=conv, norm=norm, zero_init_residual=zero_init_residual, groups=groups,
            width_per_group=width_per_group,
        )  # fmt: skip

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "ResNet", min_size=1)
        stem = jax.nn.relu(self.bn1(self.conv1(x)))
        return [stem, *self.stage_maps(self.maxpool(stem))]


ResNet18 = register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock))
ResNet34 = register("resnet34", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock))
ResNet50 = register("resnet50", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck))
ResNet101 = register("resnet101", functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block=Bottleneck))
ResNet152 = register("resnet152", functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block=Bottleneck))
ResNeXt50 = register(
    "resnext50_32x4d",
    functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, groups=32, width_per_group=4),
)
WideResNet50 = register(
    "wide_resnet50_2",
    functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck, width_per_group=128),
)
