"""Helpers shared by the model definitions."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcnn import layers


def check_images(x: jax.Array, model: str, min_size: int) -> None:
    """Checks a batch of images `(N, H, W, C)` at least `min_size` pixels on each side."""
    shape = tuple(jnp.shape(x))
    if len(shape) != 4:
        raise ValueError(f"{model} expects images x of shape (N, H, W, C), got shape {shape}")
    if min(shape[1:3]) < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {shape[1]}x{shape[2]} "
            f"(x of shape {shape})"
        )


# torchvision's initialisations, shared by the ImageNet families (VGG, ResNet, MobileNetV2):
# convolutions kaiming_normal_(mode="fan_out", nonlinearity="relu"), i.e. an untruncated normal of
# variance 2 / (prod(window) * C_out); linear layers of VGG and MobileNetV2 normal(0, 0.01).
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nn.initializers.normal(stddev=0.01)


def conv_before_norm(module: nn.Module, features: int, kernel: int, stride: int = 1, **kwargs) -> layers.Conv:
    """torchvision's convolution before a BatchNorm: no bias, padding `kernel // 2` (so the output is
    `ceil(size / stride)`), `conv_kernel_init`, computing in `module.dtype`."""
    return layers.Conv(
        features,
        kernel,
        stride=stride,
        padding=kernel // 2,
        use_bias=False,
        kernel_init=conv_kernel_init,
        dtype=module.dtype,
        **kwargs,
    )


def batch_norm(module: nn.Module, train: bool, **kwargs) -> layers.BatchNorm:
    """BatchNorm with batch statistics when `train` (else the running ones), synchronised over
    `module.axis_name` under pmap, computing in `module.dtype`."""
    return layers.BatchNorm(
        use_running_average=not train, axis_name=module.axis_name, dtype=module.dtype, **kwargs
    )
