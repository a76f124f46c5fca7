"""ConvNeXt (Liu et al., 2022) in torchvision's layout: `convnext_tiny`.

A 4x4/4 patchify stem with LayerNorm, four stages of ConvNeXt blocks (7x7 depthwise convolution,
LayerNorm, 1x1 expansion to 4x as a dense layer over the channels, exact GELU, projection back, a learnt
per-channel `layer_scale`, stochastic depth, plus the input), LayerNorm-then-2x2/2-convolution
downsampling between stages, global average pooling, LayerNorm and a dense classifier. Channels-last
throughout, so torchvision's permutes around its Linear layers are not needed. Module names: `stem_conv`,
`stem_norm`, `stage{s}_{j}` (`dwconv`, `norm`, `pwconv1`, `pwconv2`, `layer_scale`), `downsample{s}_norm`,
`downsample{s}_conv`, `head_norm`, `classifier`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import boolean, number
from jaxcnn.models._common import ZooModel, add_layers, call_block, check_images, image_shape
from jaxcnn.models.registry import register

# torchvision's: trunc_normal_(std=0.02) for every convolution and linear layer, zero biases.
convnext_init = nnx.initializers.truncated_normal(stddev=0.02)


class ConvNeXtBlock(nnx.Module):
    """`x + drop_path(layer_scale * pwconv2(gelu(pwconv1(norm(dwconv(x))))))`: `(N, H, W, C)` -> same."""

    def __init__(
        self, features: int, layer_scale: float, drop_path: float, *, dtype: Any, impl: str, rngs: nnx.Rngs
    ):
        dense = functools.partial(L.Dense, kernel_init=convnext_init, dtype=dtype, rngs=rngs)
        self.dwconv = L.Conv(
            features, features, 7, padding=3, groups=features, kernel_init=convnext_init, dtype=dtype,
            impl=impl, rngs=rngs,
        )  # fmt: skip
        self.norm = L.LayerNorm(features, dtype=dtype, rngs=rngs)
        self.pwconv1, self.pwconv2 = dense(features, 4 * features), dense(4 * features, features)
        self.layer_scale = nnx.Param(jnp.full((features,), layer_scale, jnp.float32))
        self.drop_path = L.DropPath(drop_path, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.pwconv1(self.norm(self.dwconv(x)))
        y = self.pwconv2(jax.nn.gelu(y, approximate=False))  # PyTorch's nn.GELU: the exact erf form
        return x + self.drop_path(self.layer_scale[...].astype(y.dtype) * y)


class ConvNeXt(ZooModel):
    """`(N, H, W, C)` -> logits `(N, num_classes)`.

    Stage i has `depths[i]` blocks of `widths[i]` channels; block k of all of them drops its branch with
    probability `stochastic_depth * k / (blocks - 1)` in training (torchvision's rule). At 224x224x3 and
    1000 classes convnext_tiny has 28,589,128 parameters, as torchvision's. Inputs at least 32x32 (the
    stem and each downsampling are unpadded). Feature maps: each stage's (strides 4, 8, 16, 32).

    Args:
      layer_scale: the initial value of every block's per-channel scale (1e-6).
      remat: recompute each block's (and each downsampling's) activations in the backward pass instead of
        keeping them (`nnx.remat`): less memory, the same gradients.
    """

    head_name = "classifier"

    def __init__(
        self,
        num_classes: int = 1000,
        *,
        input_shape: Sequence[int] = (224, 224, 3),
        depths: Sequence[int] = (3, 3, 9, 3),
        widths: Sequence[int] = (96, 192, 384, 768),
        layer_scale: float = 1e-6,
        stochastic_depth: float = 0.1,
        dtype: Any = None,
        impl: str = "auto",
        remat: bool = False,
        rngs: nnx.Rngs,
    ):
        if len(depths) != len(widths):
            raise ValueError(f"depths {tuple(depths)} and widths {tuple(widths)} must have the same length")
        number(stochastic_depth, "stochastic_depth", minimum=0.0, below=1.0)
        self.min_size = 4 * 2 ** (len(widths) - 1)
        self.input_shape = image_shape(input_shape, "ConvNeXt", min_size=self.min_size)
        self.remat = boolean(remat, "remat")
        conv = functools.partial(
            L.Conv, padding="VALID", kernel_init=convnext_init, dtype=dtype, impl=impl, rngs=rngs
        )
        norm = functools.partial(L.LayerNorm, dtype=dtype, rngs=rngs)
        self.stem_conv = conv(self.input_shape[-1], widths[0], 4, stride=4)
        self.stem_norm = norm(widths[0])
        layers: list[tuple[str, nnx.Module]] = []
        total, index = sum(depths), 0
        for s, (depth, width) in enumerate(zip(depths, widths, strict=True), start=1):
            if s > 1:
                layers.append((f"downsample{s - 1}_norm", norm(widths[s - 2])))
                layers.append((f"downsample{s - 1}_conv", conv(widths[s - 2], width, 2, stride=2)))
            for j in range(depth):
                rate = stochastic_depth * index / max(total - 1, 1)
                layers.append(
                    (
                        f"stage{s}_{j}",
                        ConvNeXtBlock(width, layer_scale, rate, dtype=dtype, impl=impl, rngs=rngs),
                    )
                )
                index += 1
        self.layer_names = add_layers(self, layers)
        self.pool, self.head_norm = L.GlobalAvgPool(), norm(widths[-1])
        self.classifier = L.Dense(widths[-1], num_classes, kernel_init=convnext_init, dtype=dtype, rngs=rngs)

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        check_images(x, "ConvNeXt", min_size=self.min_size)
        x, maps = self.stem_norm(self.stem_conv(x)), []
        for name in self.layer_names:
            if name.endswith("_norm"):  # a downsampling: the stage before it is done
                maps.append(x)
            x = call_block(getattr(self, name), x, self.remat)
        return [*maps, x]

    def forward_head(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.head_norm(self.pool(x))).astype(jnp.float32)


ConvNeXtTiny = register("convnext_tiny", ConvNeXt)
