"""What the model definitions share: the base class of the zoo (feature maps, head), the input check
and torchvision's initialisations."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxcnn import nnx_layers as L
from jaxcnn._validate import is_int, shape


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
    _check_size(x_shape[1], x_shape[2], model, min_size, f"x of shape {x_shape}")


def image_shape(value, model: str, min_size: int = 1) -> tuple[int, int, int]:
    """A model's `input_shape` argument: one image's `(H, W, C)`, at least `min_size` pixels a side."""
    value = shape(value, f"{model} expects images of shape (N, H, W, C): input_shape (H, W, C)", minimum=0)
    if len(value) != 3:
        raise ValueError(
            f"{model} expects images of shape (N, H, W, C), got input_shape {value} for (H, W, C)"
        )
    _check_size(value[0], value[1], model, min_size, f"input_shape {value}")
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


def pool_impl(impl: str) -> str:
    """The lowering of a zoo model's max pools for the model's `impl`, which names its convolutions' (one of
    `functional.CONV_IMPLS`, checked by each `Conv`): "xla" keeps the pools on `lax.reduce_window` as well
    (the whole model as plain Flax lowers it), every other value leaves them on "auto" (pooling has
    lowerings of its own, `functional.MAX_POOL_IMPLS`, none of them a convolution's)."""
    return "xla" if impl == "xla" else "auto"


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


def _call(block: nnx.Module, x: jax.Array) -> jax.Array:
    return block(x)


def call_block(block: nnx.Module, x: jax.Array, remat: bool) -> jax.Array:
    """`block(x)`, under `nnx.remat` (`jax.checkpoint`) when `remat`: the block's inner activations are
    not kept for the backward pass but computed again there from its input, so a network of such blocks
    keeps only their inputs and outputs (less activation memory for about one more forward pass). The
    values and gradients are the same; BatchNorm statistics and Dropout's RNG advance once."""
    return nnx.remat(_call)(block, x) if remat else block(x)


def outputs_of(
    module: nnx.Module, x: jax.Array, names: Sequence[str], keep: Iterable[str], remat: bool = False
) -> list[jax.Array]:
    """Calls the layers `names` of `module` in turn on `x` and returns the outputs of those in `keep`;
    `remat`: each layer under `call_block`'s `nnx.remat`."""
    keep, outputs = frozenset(keep), []
    for name in names:
        x = call_block(getattr(module, name), x, remat)
        if name in keep:
            outputs.append(x)
    return outputs


def last_at_each_resolution(strides: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """Of layers `(name, stride)` run in turn, those whose output is the last at its resolution: each one
    followed by a strided layer, and the last layer. Their outputs are the feature maps of networks
    that are one long sequence of blocks (MobileNet, EfficientNet), as timm takes them."""
    ends = [name for (name, _), (_, stride) in zip(strides, strides[1:]) if stride > 1]
    return (*ends, strides[-1][0])


class ZooModel(nnx.Module):
    """The base of every zoo model: a network is a sequence of stages, each giving a feature map, and a
    head that turns the last map into logits.

        logits = model(x)                  # the classifier: forward_head(feature_maps(x)[-1])
        maps = model.feature_maps(x)       # every stage's output, finest first (timm's features_only)
        model.out_indices = (1, 2)         # model(x) now returns those maps (create(..., features_only=True))

    A subclass sets `input_shape` (the `(H, W, C)` it was built for), names its last layer in
    `head_name` (the attribute `models.replace_head` replaces), and writes `feature_maps` and
    `forward_head` (timm's name).
    `models.feature_info` gives each map's channels and stride without computing anything.
    """

    head_name: str = "fc"  # a class's own, or an instance's (allconv's is its last convolution)
    input_shape: tuple[int, int, int]  # set by each model's __init__
    out_indices: tuple[int, ...] | None = None  # None: logits; else the indices of the maps to return

    def feature_maps(self, x: jax.Array) -> list[jax.Array]:
        """`(N, H, W, C)` images -> the output of each stage, `(N, H_i, W_i, C_i)`, in order."""
        raise NotImplementedError

    def forward_head(self, x: jax.Array) -> jax.Array:
        """The last feature map -> float32 logits `(N, num_classes)`."""
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array | list[jax.Array]:
        maps = self.feature_maps(x)
        if self.out_indices is None:
            return self.forward_head(maps[-1])
        return [maps[i] for i in self.out_indices]


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
    """One feature map of a zoo model (`feature_info`).

    Attributes:
      index: its position in `feature_maps(x)` (what `out_indices` selects).
      channels: C.
      stride: how many input pixels one of its cells steps over (2 for half the resolution).
      shape: `(H, W, C)` for one image of the input shape asked about.
    """

    index: int
    channels: int
    stride: int
    shape: tuple[int, ...]


_STRIDE_PROBE = 1024  # a large input: rounding of odd sizes (VALID windows, floors) hides in the ratio


def _map_shapes(model: ZooModel, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The shapes of `model.feature_maps` for one image of `input_shape` (traced, not computed)."""
    graphdef, state = nnx.split(model)

    def maps(state, x):
        module = nnx.merge(graphdef, state)
        module.eval()
        return module.feature_maps(x)

    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return [m.shape[1:] for m in jax.eval_shape(maps, state, x)]


def feature_info(model: ZooModel, input_shape: Sequence[int] | None = None) -> tuple[FeatureInfo, ...]:
    """Channels, stride and shape of each of `model.feature_maps`, for images of `input_shape` `(H, W, C)`
    (default: the model's own); nothing is computed (`jax.eval_shape`), the model may be abstract."""
    if not isinstance(model, ZooModel):
        raise TypeError(f"model must be a jaxcnn zoo model (models.ZooModel), got {type(model).__name__}")
    input_shape = model.input_shape if input_shape is None else image_shape(input_shape, type(model).__name__)
    probe = (_STRIDE_PROBE, _STRIDE_PROBE, input_shape[-1])
    shapes, probed = _map_shapes(model, input_shape), _map_shapes(model, probe)
    return tuple(
        FeatureInfo(i, shape[-1], round(_STRIDE_PROBE / big[0]), tuple(shape))
        for i, (shape, big) in enumerate(zip(shapes, probed, strict=True))
    )


def check_out_indices(model: ZooModel, out_indices: Sequence[int] | None) -> tuple[int, ...]:
    """`out_indices` (None: every feature map) as a tuple of valid indices of `model.feature_maps`."""
    count = len(feature_info(model))
    if out_indices is None:
        return tuple(range(count))
    if isinstance(out_indices, (str, bytes)) or not isinstance(out_indices, Sequence):
        raise TypeError(f"out_indices must be a sequence of ints, got {out_indices!r}")
    indices = tuple(out_indices)
    if not indices or not all(is_int(i) and -count <= i < count for i in indices):
        raise ValueError(
            f"out_indices must hold indices of {type(model).__name__}'s {count} feature maps "
            f"(0 to {count - 1}), got {out_indices!r}"
        )
    return tuple(i % count for i in indices)
