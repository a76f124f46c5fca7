"""ImageNet ResNets: torchvision's parameter counts, block structure, options, modes, minimum size."""

import functools

import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResidualBlock
from jaxcnn.summary import summary

TORCHVISION_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032}
SMALL = {"widths": (8, 16, 32, 64)}  # the real structure at a fraction of the cost


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_counts_equal_torchvision(name):
    model = models.create(name, num_classes=1000)
    assert Z.param_count(model, (1, 224, 224, 3)) == TORCHVISION_COUNTS[name]


def test_the_counts_do_not_depend_on_the_input_size():
    model = models.create("resnet18", num_classes=1000)
    assert Z.param_count(model, (1, 97, 61, 3)) == TORCHVISION_COUNTS["resnet18"]


def test_resnet18_by_hand():
    conv = lambda k, c_in, c_out: k * k * c_in * c_out
    bn = lambda c: 2 * c
    basic = lambda c_in, c: conv(3, c_in, c) + bn(c) + conv(3, c, c) + bn(c)
    downsample = lambda c_in, c: conv(1, c_in, c) + bn(c)
    stem = conv(7, 3, 64) + bn(64)
    stages = 2 * basic(64, 64)
    for c_in, c in [(64, 128), (128, 256), (256, 512)]:
        stages += basic(c_in, c) + downsample(c_in, c) + basic(c, c)
    assert stem + stages + 512 * 1000 + 1000 == TORCHVISION_COUNTS["resnet18"]


def test_bottleneck_strides_on_its_3x3_conv_v1_5():
    rows = {row.path: row for row in summary(models.create("resnet50", num_classes=1000), (224, 224, 3)).rows}
    assert rows["layer2_0/conv1"].output_shape == (56, 56, 128)  # 1x1, stride 1
    assert rows["layer2_0/conv2"].output_shape == (28, 28, 128)  # 3x3, stride 2
    assert rows["layer2_0/conv3"].output_shape == (28, 28, 512)
    assert rows["layer2_0/downsample_conv"].output_shape == (28, 28, 512)
    assert rows["layer4_2/conv3"].output_shape == (7, 7, 2048)
    assert rows["fc"].input_shape == (2048,)


def test_block_names_follow_torchvision():
    params = Z.variable_shapes(models.create("resnet18"), (1, 32, 32, 3))["params"]
    assert set(params) == {"conv1", "bn1", "fc"} | {f"layer{i}_{j}" for i in range(1, 5) for j in range(2)}
    assert set(params["layer2_0"]) == {"conv1", "bn1", "conv2", "bn2", "downsample_conv", "downsample_bn"}
    assert "kernel" in params["conv1"] and "bias" not in params["conv1"]  # no bias before BatchNorm
    assert params["conv1"]["kernel"].shape == (7, 7, 3, 64)


@pytest.mark.parametrize("block, last", [(BasicBlock, "bn2"), (Bottleneck, "bn3")])
def test_zero_init_residual_zeroes_the_last_batch_norm_scale(block, last):
    for zero in (False, True):
        built = block(8, 8, 2, zero_init_residual=zero, **Z.block_parts(nnx.Rngs(0)))
        assert np.all(np.asarray(getattr(built, last).scale[...]) == (0.0 if zero else 1.0))
        assert np.all(np.asarray(built.bn1.scale[...]) == 1.0)
        assert np.all(np.asarray(built.downsample_bn.scale[...]) == 1.0)


@pytest.mark.parametrize("zero", [False, True])
def test_zero_init_residual_reaches_every_block(zero):
    # resnet50's blocks, through create_nnx's partial, in 2 + 1 of them: initialising 16 takes seconds
    model = models.create_nnx(
        "resnet50", zero_init_residual=zero, stage_sizes=(2, 1), widths=(4, 8), input_shape=(4, 4, 3),
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    blocks = [block for _, block in nnx.iter_graph(model) if isinstance(block, ResidualBlock)]
    assert len(blocks) == 3 and all(isinstance(block, Bottleneck) for block in blocks)
    assert all(np.all(np.asarray(block.bn3.scale[...]) == (0.0 if zero else 1.0)) for block in blocks)
    assert all(np.all(np.asarray(block.bn1.scale[...]) == 1.0) for block in blocks)


def test_modes_and_bfloat16():  # basic blocks: in test_cifar_resnet
    Z.check_modes_and_dtype(
        functools.partial(models.create, "resnet50", num_classes=7, **SMALL), (2, 16, 16, 3), 7
    )


def test_batch_norm_follows_axis_name():
    Z.check_axis_name(functools.partial(models.create, "resnet18", **SMALL), (2, 8, 8, 3))


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_every_window_is_padded_so_1x1_is_the_minimum(name):
    Z.check_minimum_size(models.create(name), "ResNet", minimum=1)
    model = models.create(name, num_classes=5)
    assert Z.param_count(model, (1, 1, 1, 3)) == Z.param_count(model, (1, 224, 224, 3))


def test_create_passes_arguments_through_the_partial():
    kwargs = {"num_classes": 3, "zero_init_residual": True, "widths": (8, 16, 32, 64)}
    linen = models.create("resnet34", **kwargs)
    assert isinstance(linen, models.LinenModel)
    create = lambda: models.create_nnx("resnet34", **kwargs, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
    model = nnx.eval_shape(create)
    assert isinstance(model, models.ResNet) and model.fc.kernel.shape == (64, 3)
    stages = [name.partition("_")[0] for name in model.block_names]
    assert [stages.count(f"layer{i}") for i in range(1, 5)] == [3, 4, 6, 3]
    assert Z.count(nnx.state(model, nnx.Param)) == Z.param_count(linen, (1, 8, 8, 3))
    with pytest.raises(ValueError, match="takes no argument.*zero_init.*accepts:.*zero_init_residual"):
        models.create("resnet34", zero_init=True)


def test_mismatched_widths_name_the_arguments():
    with pytest.raises(ValueError, match="stage_sizes .* and widths"):
        Z.variable_shapes(models.create("resnet18", widths=(8, 16)), (1, 8, 8, 3))
