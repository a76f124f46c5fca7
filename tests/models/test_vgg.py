"""VGG: torchvision's parameter counts, layer layout, the adaptive pool, dropout, minimum size."""

import functools

import jax
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn import nnx_layers as L
from jaxcnn.summary import summary

TORCHVISION_COUNTS = {
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "vgg11_bn": 132_868_840,
    "vgg16_bn": 138_365_992,
}
TINY = (8, "M", 16, "M")  # the VGG structure, cheap enough to run


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_counts_equal_torchvision(name):
    assert Z.param_count(models.create(name, num_classes=1000), (1, 224, 224, 3)) == TORCHVISION_COUNTS[name]


def test_vgg11_by_hand():
    widths = [3, 64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(9 * c_in * c_out + c_out for c_in, c_out in zip(widths, widths[1:]))  # with bias
    dense = (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert convs + dense == TORCHVISION_COUNTS["vgg11"]
    assert convs + dense + 2 * sum(widths[1:]) == TORCHVISION_COUNTS["vgg11_bn"]


@pytest.mark.parametrize("size, pooled", [(224, 7), (64, 2), (32, 1), (97, 3)])
def test_any_size_is_pooled_to_7x7(size, pooled):
    rows = {row.path: row for row in summary(models.create("vgg16"), (size, size, 3)).rows}
    assert rows["conv13"].output_shape == (pooled * 2, pooled * 2, 512)
    assert rows["avgpool"].output_shape == (7, 7, 512)
    assert rows["fc1"].input_shape == (7 * 7 * 512,)


def test_layer_names():
    params = Z.variable_shapes(models.create("vgg11_bn"), (1, 32, 32, 3))["params"]
    convs = {f"conv{k}" for k in range(1, 9)}
    assert set(params) == convs | {f"bn{k}" for k in range(1, 9)} | {"fc1", "fc2", "fc3"}
    assert all("bias" in params[conv] for conv in convs)  # torchvision keeps the conv bias before BN


def test_minimum_is_one_cell_after_every_pool():
    Z.check_minimum_size(models.create("vgg11"), "VGG", minimum=32)
    Z.check_minimum_size(models.create("vgg16_bn"), "VGG", minimum=32)
    Z.check_minimum_size(Z.linen(models.VGG, config=TINY), "VGG", minimum=4)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_modes_and_bfloat16(batch_norm):
    make = functools.partial(Z.linen, models.VGG, config=TINY, num_classes=5, batch_norm=batch_norm)
    Z.check_modes_and_dtype(make, (2, 8, 8, 3), 5)


def test_batch_norm_follows_axis_name():
    Z.check_axis_name(functools.partial(Z.linen, models.VGG, config=TINY, batch_norm=True), (2, 8, 8, 3))


def test_dropout_in_the_classifier_only_when_training():
    model = Z.linen(models.VGG, config=TINY, num_classes=5)
    x = Z.random_images((2, 8, 8, 3))
    for linen in (model, models.create("vgg11")):
        graph = nnx.iter_graph(Z.abstract(linen, (2, 32, 32, 3)))
        dropouts = {path: m.rate for path, m in graph if isinstance(m, L.Dropout)}
        assert dropouts == {("dropout1",): 0.5, ("dropout2",): 0.5}  # between fc1, fc2 and fc3
    variables = Z.fake_variables(model, x.shape)
    apply = jax.jit(
        lambda key, train: model.apply(variables, x, train=train, rngs={"dropout": key}), static_argnums=1
    )
    assert not np.allclose(apply(jax.random.PRNGKey(1), True), apply(jax.random.PRNGKey(2), True))
    np.testing.assert_array_equal(apply(jax.random.PRNGKey(1), False), apply(jax.random.PRNGKey(2), False))


@pytest.mark.parametrize("config", [(8, "X"), (0, "M"), (8.0,), (True, "M")])
def test_bad_config_is_named(config):
    with pytest.raises(ValueError, match="config must hold positive ints"):
        Z.variable_shapes(Z.linen(models.VGG, config=config), (1, 32, 32, 3))
