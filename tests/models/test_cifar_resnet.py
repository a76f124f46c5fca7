"""CIFAR ResNets (He et al. 2016, section 4.2): counts by hand, option A and B shortcuts, modes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn.models.resnet import BasicBlock
from jaxcnn.summary import summary


def by_hand(n: int, shortcut: str, classes: int = 10) -> int:
    """Parameters of ResNet-(6n+2) with 16, 32, 64 channels: convolutions without bias, two
    BatchNorm vectors per conv; option B adds 1x1 conv + BN projections at the two downsamplings."""
    conv = lambda c_in, c_out, k=3: k * k * c_in * c_out
    block = lambda c_in, c: conv(c_in, c) + conv(c, c) + 4 * c
    total = conv(3, 16) + 2 * 16 + n * block(16, 16)
    for c_in, c in [(16, 32), (32, 64)]:
        total += block(c_in, c) + (n - 1) * block(c, c)
        total += conv(c_in, c, 1) + 2 * c if shortcut == "B" else 0
    return total + 64 * classes + classes


@pytest.mark.parametrize(
    "name, n, shortcut, expected",
    [("resnet20", 3, "A", 269_722), ("resnet56", 9, "A", 853_018), ("resnet20", 3, "B", 272_474)],
)
def test_parameter_counts(name, n, shortcut, expected):
    assert by_hand(n, shortcut) == expected  # resnet20 0.27M, resnet56 0.85M: table 6 of the paper
    assert Z.param_count(models.create(name, shortcut=shortcut), (1, 32, 32, 3)) == expected


def test_default_is_option_a_without_projections():
    params = Z.variable_shapes(models.create("resnet20"), (1, 32, 32, 3))["params"]
    assert not any(name.startswith("downsample") for block in params.values() for name in block)
    params = Z.variable_shapes(models.create("resnet20", shortcut="B"), (1, 32, 32, 3))["params"]
    assert set(params["layer2_0"]) >= {"downsample_conv", "downsample_bn"}
    assert "downsample_conv" not in params["layer2_1"]


def test_stages_16_32_64_without_max_pool():
    result = summary(models.create("resnet20"), (32, 32, 3))
    rows = {row.path: row for row in result.rows}
    assert rows["conv1"].output_shape == (32, 32, 16)
    assert rows["layer1_2/conv2"].output_shape == (32, 32, 16)
    assert rows["layer2_0/conv1"].output_shape == (16, 16, 32)
    assert rows["layer3_2/conv2"].output_shape == (8, 8, 64)
    assert not any(row.kind == "MaxPool" for row in result.rows)
    assert sum(row.kind == "Conv" for row in result.rows) + 1 == 20  # depth: the convs and fc


def test_option_a_shortcut_subsamples_and_pads_channels_with_zeros():
    x = jnp.abs(Z.random_images((2, 7, 7, 16)))  # odd size: ceil(7 / 2) = 4 on both paths
    parts = Z.block_parts(nnx.Rngs(0))
    block = BasicBlock(
        16, 32, 2, shortcut="A", zero_init_residual=True, **parts
    )  # residual branch starts at 0
    block.eval()
    out = block(x)
    assert out.shape == (2, 4, 4, 32)
    np.testing.assert_array_equal(out[..., 8:24], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(out[..., :8], 0)
    np.testing.assert_array_equal(out[..., 24:], 0)
    assert Z.count(nnx.state(block, nnx.Param)) == 3 * 3 * 16 * 32 + 3 * 3 * 32 * 32 + 4 * 32


def test_modes_and_bfloat16():
    Z.check_modes_and_dtype(functools.partial(models.create, "resnet20", num_classes=4), (2, 12, 12, 3), 4)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_batch_norm_follows_axis_name(shortcut):
    Z.check_axis_name(functools.partial(models.create, "resnet20", shortcut=shortcut), (2, 8, 8, 3))


def test_batch_norm_statistics_are_synchronised_over_axis_name():
    Z.check_synchronised_batch_norm(functools.partial(models.create, "resnet20", shortcut="B"), (4, 8, 8, 3))


@pytest.mark.parametrize("name", ["resnet20", "resnet56"])
def test_every_window_is_padded_so_1x1_is_the_minimum(name):
    Z.check_minimum_size(models.create(name), "CifarResNet", minimum=1)


@pytest.mark.parametrize("depth", [21, 2, 8.0, True])
def test_depth_must_be_6n_plus_2(depth):
    with pytest.raises(ValueError, match="depth must be 6n \\+ 2"):
        Z.variable_shapes(models.create("resnet20", depth=depth), (1, 32, 32, 3))


def test_unknown_shortcut_is_named():
    with pytest.raises(ValueError, match='shortcut must be "A" or "B", got \'C\''):
        Z.variable_shapes(models.create("resnet20", shortcut="C"), (1, 32, 32, 3))


def test_deeper_variants_through_create():
    model = models.create("resnet20", depth=32, num_classes=100)
    assert Z.param_count(model, (1, 32, 32, 3)) == by_hand(5, "A", classes=100)
    assert jax.eval_shape(model.init, Z.KEY, jnp.zeros((1, 32, 32, 3)))["params"]["fc"]["kernel"].shape == (
        64,
        100,
    )
