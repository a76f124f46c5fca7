"""ResNets for ImageNet (He et al., 2016) in torchvision's layout: resnet18, resnet34, resnet50.

The bottleneck block strides on its 3x3 convolution (torchvision's "v1.5"), convolutions before
BatchNorm have no bias, and module names follow torchvision's (`conv1`, `bn1`, `layer2_0`,
`downsample_conv`, `fc`), so `jaxcnn.models.load_torch_state_dict` maps its weights one to one.
The blocks are shared with the CIFAR ResNets of `jaxcnn.models.cifar_resnet`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers
from jaxcnn.models._common import batch_norm, check_images, conv_before_norm
from jaxcnn.models.registry import register

SHORTCUTS = ("A", "B")
# torch.nn.Linear's default initialisation of the weight: uniform(-1/sqrt(D_in), 1/sqrt(D_in)).
torch_linear_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


class ResidualBlock(nn.Module):
    """What the basic and bottleneck blocks share: arguments, the last BatchNorm's init, the shortcut.

    Attributes:
      features: the block's width; its output has `features * expansion` channels.
      stride: of the block's first strided convolution (and of the shortcut).
      shortcut: how the shortcut matches a changed shape: "B" a 1x1 convolution with stride and
        BatchNorm (torchvision, the paper's ImageNet choice), "A" parameter-free: subsampling by
        `stride` and zero channels appended (the paper's CIFAR choice). Same shape: identity.
      zero_init_residual: start the last BatchNorm's scale at zero, so each block begins as
        the identity (Goyal et al., 2017).
    """

    features: int
    stride: int = 1
    shortcut: str = "B"
    zero_init_residual: bool = False
    axis_name: str | None = None
    dtype: Any = None
    expansion: ClassVar[int] = 1

    @property
    def last_scale_init(self) -> nn.initializers.Initializer:
        """Initialiser of the residual branch's last BatchNorm scale: zeros if `zero_init_residual`."""
        return nn.initializers.zeros_init() if self.zero_init_residual else nn.initializers.ones_init()

    def residual(self, x: jax.Array, y: jax.Array, train: bool) -> jax.Array:
        """`relu(y + shortcut(x))` where `y` is the residual branch's output."""
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f'shortcut must be "A" or "B", got {self.shortcut!r}')
        out_features = self.features * self.expansion
        if self.stride != 1 or x.shape[-1] != out_features:
            if self.shortcut == "B":
                x = conv_before_norm(self, out_features, 1, self.stride, name="downsample_conv")(x)
                x = batch_norm(self, train, name="downsample_bn")(x)
            else:
                x = x[:, :: self.stride, :: self.stride, :]
                extra = out_features - x.shape[-1]
                if extra < 0:
                    raise ValueError(
                        f'shortcut "A" can only add channels, got {x.shape[-1]} -> {out_features} features'
                    )
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
        return nn.relu(y + x)


class BasicBlock(ResidualBlock):
    """3x3 conv-BN-ReLU, 3x3 conv-BN, plus the shortcut, then ReLU.

    `(N, H, W, C)` -> `(N, ceil(H / stride), ceil(W / stride), features)`.
    """

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv_before_norm(self, self.features, 3, self.stride, name="conv1")(x)
        y = nn.relu(batch_norm(self, train, name="bn1")(y))
        y = conv_before_norm(self, self.features, 3, name="conv2")(y)
        y = batch_norm(self, train, scale_init=self.last_scale_init, name="bn2")(y)
        return self.residual(x, y, train)


class Bottleneck(ResidualBlock):
    """1x1 conv-BN-ReLU, 3x3 conv (with the stride)-BN-ReLU, 1x1 conv to `4 * features`-BN,
    plus the shortcut, then ReLU.

    `(N, H, W, C)` -> `(N, ceil(H / stride), ceil(W / stride), 4 * features)`.
    """

    expansion: ClassVar[int] = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = conv_before_norm(self, self.features, 1, name="conv1")(x)
        y = nn.relu(batch_norm(self, train, name="bn1")(y))
        y = conv_before_norm(self, self.features, 3, self.stride, name="conv2")(y)
        y = nn.relu(batch_norm(self, train, name="bn2")(y))
        y = conv_before_norm(self, self.features * 4, 1, name="conv3")(y)
        y = batch_norm(self, train, scale_init=self.last_scale_init, name="bn3")(y)
        return self.residual(x, y, train)


def stages_and_classifier(
    module: nn.Module,
    x: jax.Array,
    block: type[ResidualBlock],
    stage_sizes: Sequence[int],
    train: bool,
    **block_kwargs,
) -> jax.Array:
    """What every ResNet does after its stem, called inside `module`'s compact `__call__`: stages of
    `stage_sizes[i]` blocks of width `module.widths[i]`, named `layer{i+1}_{j}` as torchvision's
    `layer{i+1}.{j}` (every stage but the first halves the resolution in its first block), global
    average pooling and the dense layer `fc`. Returns float32 logits `(N, module.num_classes)`."""
    if len(stage_sizes) != len(module.widths):
        raise ValueError(
            f"stage_sizes {tuple(stage_sizes)} and widths {tuple(module.widths)} must have the same length"
        )
    for i, (size, width) in enumerate(zip(stage_sizes, module.widths, strict=True)):
        for j in range(size):
            x = block(
                width,
                stride=2 if i > 0 and j == 0 else 1,
                zero_init_residual=module.zero_init_residual,
                axis_name=module.axis_name,
                dtype=module.dtype,
                name=f"layer{i + 1}_{j}",
                **block_kwargs,
            )(x, train)
    x = layers.GlobalAvgPool()(x)
    x = layers.Dense(module.num_classes, kernel_init=torch_linear_init, dtype=module.dtype, name="fc")(x)
    return x.astype(jnp.float32)


class ResNet(nn.Module):
    """ResNet for ImageNet-sized images: 7x7/2 conv-BN-ReLU, 3x3/2 max pool, four stages of
    residual blocks (64, 128, 256, 512 wide, strides 1, 2, 2, 2), global average pool, dense.

    `(N, H, W, C)` -> logits `(N, num_classes)`; any input of at least 1x1 pixels (every window
    is padded), 224x224 as in the paper. At 224x224x3 and 1000 classes resnet18 has 11,689,512
    parameters, resnet34 21,797,672 and resnet50 25,557,032, as torchvision's.
    """

    stage_sizes: Sequence[int]
    block: type[ResidualBlock]
    num_classes: int = 1000
    widths: Sequence[int] = (64, 128, 256, 512)
    zero_init_residual: bool = False
    axis_name: str | None = None
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        check_images(x, "ResNet", min_size=1)
        x = conv_before_norm(self, self.widths[0], 7, stride=2, name="conv1")(x)
        x = nn.relu(batch_norm(self, train, name="bn1")(x))
        x = layers.MaxPool(3, stride=2, padding=1, name="maxpool")(x)
        return stages_and_classifier(self, x, self.block, self.stage_sizes, train)


ResNet18 = register("resnet18", functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block=BasicBlock))
ResNet34 = register("resnet34", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=BasicBlock))
ResNet50 = register("resnet50", functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block=Bottleneck))
