"""DenseNet (Huang et al., 2017) in torchvision's layout: densenet121, and the CIFAR DenseNet-BC
densenet_bc_100_12 (depth 100, growth rate 12) of the paper's section 4.

Each dense layer (BN-ReLU-1x1 conv to `bn_size * growth_rate`, BN-ReLU-3x3 conv to `growth_rate`) reads
the concatenation of every earlier map of its block and adds `growth_rate` channels to it; transitions
between blocks (BN-ReLU-1x1 conv to half the channels, 2x2 average pool) halve the resolution. Module
names follow torchvision's `features.*` (`conv0`, `norm0`, `denseblock1/denselayer1/norm1`,
`transition1/conv`, `norm5`) and `classifier`, so `load_torch_state_dict` maps them one to one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import boolean, integer
from jaxcnn.models._common import (
    ZooModel,
    add_layers,
    call_block,
    check_images,
    image_shape,
    pool_impl,
    torch_linear_init,
)
from jaxcnn.models.registry import register

# torchvision's: kaiming_normal_ (fan_in, ReLU gain) for the convolutions.
densenet_conv_init = nnx.initializers.variance_scaling(2.0, "fan_in", "normal")


class DenseLayer(nnx.Module):
    """BN-ReLU-1x1 conv-BN-ReLU-3x3 conv: `(N, H, W, in_features)` -> `(N, H, W, growth_rate)` new
    channels (the block concatenates them to its input)."""

    def __init__(
        self,
        in_features: int,
        growth_rate: int,
        bn_size: int,
        drop_rate: float,
        *,
        conv: Callable,
        norm: Callable,
        rngs: nnx.Rngs,
    ):
        self.norm1, self.conv1 = norm(in_features), conv(in_features, bn_size * growth_rate, 1)
        self.norm2 = norm(bn_size * growth_rate)
        self.conv2 = conv(bn_size * growth_rate, growth_rate, 3, padding=1)
        self.dropout = L.Dropout(drop_rate, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.conv1(jax.nn.relu(self.norm1(x)))
        return self.dropout(self.conv2(jax.nn.relu(self.norm2(y))))


class DenseBlock(nnx.Module):
    """`num_layers` dense layers `denselayer1`, ...: `(N, H, W, C)` -> `(N, H, W, C + num_layers *
    growth_rate)`, the input and every layer's output concatenated; each layer under `nnx.remat` when
    `remat` (the memory-efficient DenseNet of Pleiss et al., 2017: the concatenations are kept, not the
    layers' inner maps)."""

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, remat: bool, **layer_kwargs: Any):
        layers = [
            (f"denselayer{i + 1}", DenseLayer(in_features + i * growth_rate, growth_rate, **layer_kwargs))
            for i in range(num_layers)
        ]
        self.layer_names = add_layers(self, layers)
        self.out_features, self.remat = in_features + num_layers * growth_rate, remat

    def __call__(self, x: jax.Array) -> jax.Array:
        for name in self.layer_names:
            x = jnp.concatenate([x, call_block(getattr(self, name), x, self.remat)], axis=-1)
        return x


class Transition(nnx.Module):
    """BN-ReLU-1x1 conv-2x2 average pool: `(N, H, W, in_features)` -> `(N, H // 2, W // 2, features)`."""

    def __init__(self, in_features: int, features: int, *, conv: Callable, norm: Callable):
        self.norm, self.conv, self.pool = norm(in_features), conv(in_features, features, 1), L.AvgPool(2)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.pool(self.conv(jax.nn.relu(self.norm(x))))


class DenseNet(ZooModel):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    A stem (ImageNet: 7x7/2 conv-BN-ReLU and a 3x3/2 max pool; `small_inputs`: one 3x3 convolution, as
    the paper's CIFAR nets), dense blocks of `block_config` layers joined by transitions that halve
    channels and resolution, BN-ReLU, global average pooling and the dense `classifier`.

    At 224x224x3 and 1000 classes densenet121 has 7,978,856 parameters, as torchvision's; at 32x32x3 and
    10 classes densenet_bc_100_12 has 769,162 (0.8M in the paper's table 2). Inputs at least 29x29
    (densenet121) or 4x4 (densenet_bc_100_12): each transition's pool needs two cells. Feature maps: the
    stem's (ImageNet), each block's before its transition, and the last after BN-ReLU (strides 2, 4, 8, 16,
    32 for densenet121; 1, 2, 4 for densenet_bc_100_12).

    Args:
      growth_rate: channels each dense layer adds (k).
      block_config: layers per dense block.
      num_init_features: the stem's channels.
      bn_size: the 1x1 convolution of a dense layer widens to `bn_size * growth_rate` (the "B" of -BC).
      compression: transitions keep `floor(compression * C)` channels (the "C" of -BC; 0.5).
      drop_rate: dropout after each dense layer.
      small_inputs: the CIFAR stem instead of the ImageNet one.
      remat: recompute each dense layer's activations in the backward pass instead of keeping them
        (`nnx.remat`): less memory, the same gradients.
    """

    head_name = "classifier"

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        small_inputs: bool = False,
        axis_name: str | None = None,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        integer(growth_rate, "growth_rate", minimum=1)
        if not block_config or not all(integer(n, "block_config", minimum=1) for n in block_config):
            raise ValueError(f"block_config must hold layer counts >= 1, got {block_config!r}")
        if not 0 < compression <= 1:
            raise ValueError(f"compression must be in (0, 1], got {compression!r}")
        self.small_inputs = small_inputs
        reduction = 1 if small_inputs else 4  # of the stem: stride 2 and a max pool
        self.min_size = reduction * (2 ** (len(block_config) - 1) - 1) + 1
        self.input_shape = image_shape(input_shape, "DenseNet", min_size=self.min_size)
        conv = functools.partial(
            L.Conv,
            use_bias=False,
            padding=0,
            kernel_init=densenet_conv_init,
            dtype=dtype,
            impl=impl,
            rngs=rngs,
        )
        norm = functools.partial(L.BatchNorm, axis_name=axis_name, dtype=dtype, rngs=rngs)
        if small_inputs:
            self.conv0 = conv(self.input_shape[-1], num_init_features, 3, padding=1)
        else:
            self.conv0 = conv(self.input_shape[-1], num_init_features, 7, stride=2, padding=3)
            self.norm0 = norm(num_init_features)
            self.pool0 = L.MaxPool(3, stride=2, padding=1, impl=pool_impl(impl))
        layers: list[tuple[str, nnx.Module]] = []
        features = num_init_features
        for i, num_layers in enumerate(block_config, start=1):
            block = DenseBlock(
                num_layers, features, growth_rate, boolean(remat, "remat"), bn_size=bn_size,
                drop_rate=drop_rate, conv=conv, norm=norm, rngs=rngs,
            )  # fmt: skip
            layers.append((f"denseblock{i}", block))
            features = block.out_features
            if i < len(block_config):
                layers.append(
                    (
                        f"transition{i}",
                        Transition(features, int(features * compression), conv=conv, norm=norm),
                    )
                )
                features = int(features * compression)
        self.layer_names = add_layers(self, layers)
        self.norm5, self.pool = norm(features), L.GlobalAvgPool()
        self.classifier = L.Dense(
            features, num_classes, kernel_init=torch_linear_init, dtype=dtype, rngs=rngs
        )

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "DenseNet", min_size=self.min_size)
        maps = []
        if self.small_inputs:
            x = self.conv0(x)
        else:
            maps.append(jax.nn.relu(self.norm0(self.conv0(x))))
            x = self.pool0(maps[-1])
        for name in self.layer_names:
            if name.startswith("transition"):  # the block before it is done
                maps.append(x)
            x = getattr(self, name)(x)
        return [*maps, jax.nn.relu(self.norm5(x))]

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.pool(x)).astype(jnp.float32)


DenseNet121 = register(
    "densenet121",
    functools.partial(DenseNet, growth_rate=32, block_config=(6, 12, 24, 16), num_init_features=64),
)
DenseNetBC100 = register(
    "densenet_bc_100_12",
    functools.partial(
        DenseNet, input_shape=(32, 32, 3), growth_rate=12, block_config=(16, 16, 16), num_init_features=24,
        small_inputs=True,
    ),
)  # fmt: skip
