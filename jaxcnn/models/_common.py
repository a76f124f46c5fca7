"""What the model definitions share: the input check and torchvision's initialisations."""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import shape


def _check_size(height: int, width: int, model: str, min_size: int, what: str) -> None:
    if min(height, width) < min_size:
        raise ValueError(
            f"{model} needs inputs of at least {min_size}x{min_size} pixels, got {height}x{width} ({what})"
        )


def check_images(x: jax.Array, model: str, min_size: int) -> None:
    """Checks a batch of images `(N, H, W, C)` at least `min_size` pixels on each side."""
    x_shape = tuple(jnp.shape(x))
    if len(x_shape) != 4:
        raise ValueError(f"{model} expects images x of shape (N, H, W, C), got shape {x_shape}")
    _check_size(*x_shape[1:3], model, min_size, f"x of shape {x_shape}")


def image_shape(value, model: str, min_size: int = 1) -> tuple[int, int, int]:
    """A model's `input_shape` argument: one image's `(H, W, C)`, at least `min_size` pixels a side."""
    value = shape(value, f"{model} expects images of shape (N, H, W, C): input_shape (H, W, C)", minimum=0)
    if len(value) != 3:
        raise ValueError(
            f"{model} expects images of shape (N, H, W, C), got input_shape {value} for (H, W, C)"
        )
    _check_size(*value[:2], model, min_size, f"input_shape {value}")
    return value


# torchvision's initialisations, shared by the ImageNet families (VGG, ResNet, MobileNetV2):
# convolutions kaiming_normal_(mode="fan_out", nonlinearity="relu"), i.e. an untruncated normal of
# variance 2 / (prod(window) * C_out); linear layers of VGG and MobileNetV2 normal(0, 0.01), ResNet's
# torch.nn.Linear's default: uniform(-1/sqrt(D_in), 1/sqrt(D_in)).
conv_kernel_init = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
dense_kernel_init = nnx.initializers.normal(stddev=0.01)
torch_linear_init = nnx.initializers.variance_scaling(1 / 3, "fan_in", "uniform")


def output_shape(fn, input_shape) -> tuple[int, ...]:
    """The shape `fn` gives one image of `input_shape` `(H, W, C)`, batch dim dropped (nothing computed).

    For sizing a layer that follows `fn`, e.g. the dense layer after a flattened feature map."""
    return jax.eval_shape(fn, jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)).shape[1:]


def add_layers(module: nnx.Module, layers: Iterable[tuple[str, nnx.Module]]) -> tuple[str, ...]:
    """Sets each `(name, layer)` as an attribute of `module` and returns the names, in order.

    A model keeps that tuple and calls `getattr(self, name)` in turn: its parameters then sit under
    readable paths (`conv3/kernel`, `layer2_0/bn1/scale`), as torchvision names them, rather than
    under list indices."""
    names = []
    for name, layer in layers:
        setattr(module, name, layer)
        names.append(name)
    return tuple(names)


def conv_before_norm(in_features: int, features: int, kernel: int, stride: int = 1, **kwargs) -> L.Conv:
    """torchvision's convolution before a BatchNorm: no bias, padding `kernel // 2` (so the output is
    `ceil(size / stride)`), `conv_kernel_init`; `kwargs` go to `nnx_layers.Conv` (`rngs`, `dtype`, ...)."""
    return L.Conv(
        in_features,
        features,
        kernel,
        stride=stride,
        padding=kernel // 2,
        use_bias=False,
        kernel_init=conv_kernel_init,
        **kwargs,
    )
