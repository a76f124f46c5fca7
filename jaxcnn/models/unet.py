"""A small U-Net (Ronneberger et al., 2015): an image-to-image model, e.g. a denoising autoencoder."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn.models._common import check_images, image_shape, pool_impl
from jaxcnn.models.registry import register

LEVELS = 2  # each halves the image: inputs are multiples of 2**LEVELS


def _check_divisible(height: int, width: int, what: str) -> None:
    step = 2**LEVELS
    if height % step or width % step:
        raise ValueError(f"unet_small needs heights and widths that are multiples of {step}, got {what}")


@register("unet_small")
class UNetSmall(nnx.Module):
    """Two down levels (two 3x3 convs + ReLU, 2x2 max pool), a bottleneck, two up levels (2x2 stride-2
    transposed conv, concatenation with the skip connection, two 3x3 convs + ReLU), a 1x1 head.

    Unlike the classifiers of the zoo, the output is an image: `(N, H, W, C)` -> `(N, H, W, num_classes)`,
    one value per pixel and class (for denoising, `num_classes` is the image's channels). Widths
    `width`, `2*width`, `4*width` (default 16: 116,753 parameters on one channel with one output).
    Inputs at least 4x4 with sides multiples of 4. Parameter names follow the module names of a PyTorch
    twin (`down1_conv1`, `up2`, `head`, ...), so `models.load_torch_state_dict` maps them one to one.
    """

    def __init__(
        self,
        num_classes: int = 1,
        *,
        input_shape: Sequence[int] = (28, 28, 1),
        width: int = 16,
        padding_mode: str = "zeros",
        dtype: Any = None,
        impl: str = "auto",
        rngs: nnx.Rngs,
    ):
        height, wide, channels = image_shape(input_shape, "unet_small", min_size=2**LEVELS)
        _check_divisible(height, wide, f"input_shape {tuple(input_shape)}")
        conv = partial(L.Conv, padding=1, padding_mode=padding_mode, dtype=dtype, impl=impl, rngs=rngs)
        up = partial(L.ConvTranspose, kernel_size=2, stride=2, dtype=dtype, impl=impl, rngs=rngs)
        widths = [width * 2**level for level in range(LEVELS + 1)]  # 16, 32, 64
        self.down1_conv1, self.down1_conv2 = conv(channels, widths[0], 3), conv(widths[0], widths[0], 3)
        self.down2_conv1, self.down2_conv2 = conv(widths[0], widths[1], 3), conv(widths[1], widths[1], 3)
        self.middle_conv1, self.middle_conv2 = conv(widths[1], widths[2], 3), conv(widths[2], widths[2], 3)
        self.up2 = up(widths[2], widths[1])
        self.up2_conv1, self.up2_conv2 = conv(2 * widths[1], widths[1], 3), conv(widths[1], widths[1], 3)
        self.up1 = up(widths[1], widths[0])
        self.up1_conv1, self.up1_conv2 = conv(2 * widths[0], widths[0], 3), conv(widths[0], widths[0], 3)
        self.head = L.Conv(widths[0], num_classes, 1, dtype=dtype, impl=impl, rngs=rngs)
        self.pool = L.MaxPool(2, impl=pool_impl(impl))

    @staticmethod
    def _twice(conv1, conv2, x):
        return jax.nn.relu(conv2(jax.nn.relu(conv1(x))))

    def __call__(self, x: jax.Array) -> jax.Array:
        check_images(x, "unet_small", min_size=2**LEVELS)
        _check_divisible(x.shape[1], x.shape[2], f"x of shape {tuple(x.shape)}")
        skip1 = self._twice(self.down1_conv1, self.down1_conv2, x)
        skip2 = self._twice(self.down2_conv1, self.down2_conv2, self.pool(skip1))
        x = self._twice(self.middle_conv1, self.middle_conv2, self.pool(skip2))
        x = self._twice(self.up2_conv1, self.up2_conv2, jnp.concatenate([self.up2(x), skip2], -1))
        x = self._twice(self.up1_conv1, self.up1_conv2, jnp.concatenate([self.up1(x), skip1], -1))
        return self.head(x).astype(jnp.float32)
