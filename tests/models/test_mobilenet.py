"""MobileNetV2: torchvision's parameter count, inverted residuals, width multiplier, ReLU6."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn.models.mobilenet import ConvBN, InvertedResidual, make_divisible


def test_parameter_count_equals_torchvision():
    assert Z.param_count(models.create("mobilenet_v2", num_classes=1000), (1, 224, 224, 3)) == 3_504_872


@pytest.mark.parametrize(
    "value, expected",
    [(32, 32), (16, 16), (32 * 0.5, 16), (16 * 0.35, 8), (44.8, 48), (10, 16), (12, 16), (1280 * 1.4, 1792)],
)
def test_make_divisible_as_torchvision(value, expected):
    # multiples of 8, at least 8, never more than 10% below the value (10 -> 8 would be: so 16)
    assert make_divisible(value) == expected


def test_blocks():
    params = Z.variable_shapes(models.create("mobilenet_v2"), (1, 32, 32, 3))["params"]
    assert set(params) == {"stem", "head", "classifier"} | {f"block{i}" for i in range(1, 18)}
    assert set(params["block1"]) == {"depthwise", "project"}  # expansion 1: no expand conv
    assert params["block1"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 32)
    assert params["block2"]["expand"]["conv"]["kernel"].shape == (1, 1, 16, 96)
    assert params["block2"]["depthwise"]["conv"]["kernel"].shape == (3, 3, 1, 96)  # depthwise: groups = 96
    assert params["block2"]["project"]["conv"]["kernel"].shape == (1, 1, 96, 24)
    assert set(params["block2"]["project"]["bn"]) == {"scale", "bias"}
    assert params["head"]["conv"]["kernel"].shape == (1, 1, 320, 1280)
    assert params["classifier"]["kernel"].shape == (1280, 10)


@pytest.mark.parametrize(
    "alpha, stem, last_block, head", [(0.5, 16, 160, 1280), (1.4, 48, 448, 1792), (0.35, 16, 112, 1280)]
)
def test_width_multiplier(alpha, stem, last_block, head):
    params = Z.variable_shapes(models.create("mobilenet_v2", width_multiplier=alpha), (1, 32, 32, 3))[
        "params"
    ]
    assert params["stem"]["conv"]["kernel"].shape[-1] == stem
    assert params["block17"]["project"]["conv"]["kernel"].shape[-1] == last_block
    assert params["head"]["conv"]["kernel"].shape[-1] == head


def test_inverted_residual_setting_as_torchvision():
    from torch_reference import mobilenet_v2

    setting = ((1, 8, 1, 1), (6, 16, 2, 2), (4, 24, 1, 1))
    torch_model = mobilenet_v2(num_classes=10, width_mult=0.5, inverted_residual_setting=setting)
    expected = sum(p.numel() for p in torch_model.parameters())
    model = models.create("mobilenet_v2", width_multiplier=0.5, inverted_residual_setting=setting)
    assert Z.param_count(model, (1, 32, 32, 3)) == expected
    params = Z.variable_shapes(model, (1, 32, 32, 3))["params"]
    assert {name for name in params if name.startswith("block")} == {"block1", "block2", "block3", "block4"}


@pytest.mark.parametrize(
    "setting, error, message",
    [
        ((), ValueError, "non-empty sequence of \\(t, c, n, s\\) stages"),
        (((1, 16, 1),), ValueError, "non-empty sequence of \\(t, c, n, s\\) stages"),
        (((1, 16, 0, 1),), ValueError, "inverted_residual_setting's repeats n must be"),
        (((1, 16, 1, 1.5),), TypeError, "inverted_residual_setting's stride s must be"),
    ],
)
def test_bad_inverted_residual_setting_is_named(setting, error, message):
    with pytest.raises(error, match=message):
        Z.variable_shapes(models.create("mobilenet_v2", inverted_residual_setting=setting), (1, 32, 32, 3))


@pytest.mark.parametrize("alpha", [0, -1.0, "1", True])
def test_bad_width_multiplier_is_named(alpha):
    with pytest.raises(ValueError, match="width_multiplier must be a positive number"):
        Z.variable_shapes(models.create("mobilenet_v2", width_multiplier=alpha), (1, 32, 32, 3))


@pytest.mark.parametrize("stride, features, residual", [(1, 8, True), (2, 8, False), (1, 16, False)])
def test_inverted_residual_adds_its_input_only_when_the_shape_is_kept(stride, features, residual):
    x = Z.random_images((2, 6, 6, 8))
    block = InvertedResidual(8, features, stride, **Z.block_parts(nnx.Rngs(0)))
    block.project.bn.scale[...] = jnp.zeros(features)  # the branch outputs 0
    block.eval()
    out = block(x)
    np.testing.assert_array_equal(out, x if residual else jnp.zeros_like(out))


def test_relu6_clips_and_projection_is_linear():
    x = 100 * jnp.abs(Z.random_images((1, 4, 4, 2)))
    for relu6, (low, high) in [(True, (0, 6)), (False, (-np.inf, np.inf))]:
        activation = jax.nn.relu6 if relu6 else None
        layer = ConvBN(2, 4, kernel_size=1, activation=activation, **Z.block_parts(nnx.Rngs(0)))
        layer.eval()
        out = layer(x)
        assert low <= float(out.min()) and float(out.max()) <= high
        assert (float(out.max()) == 6.0) == relu6  # large inputs saturate


def test_minimum_is_1x1():
    Z.check_minimum_size(models.create("mobilenet_v2"), "MobileNetV2", minimum=1)


def test_modes_and_bfloat16():
    make = functools.partial(models.create, "mobilenet_v2", width_multiplier=0.25, num_classes=3)
    Z.check_modes_and_dtype(make, (2, 16, 16, 3), 3)


def test_batch_norm_follows_axis_name():
    make = functools.partial(models.create, "mobilenet_v2", width_multiplier=0.25, dropout=0.0)
    Z.check_axis_name(make, (2, 8, 8, 3))
