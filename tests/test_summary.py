"""jaxcnn.summary: rows, formulas, FLOPs and totals (against flax.linen.tabulate and torchvision)."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxcnn
from jaxcnn import functional as F
from jaxcnn import layers, models
from jaxcnn import nnx_layers as L
from jaxcnn.summary import Row, Summary, summary

TORCHVISION = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "vgg11": 132_863_336,
    "vgg16": 138_357_544,
    "mobilenet_v2": 3_504_872,
}


@pytest.fixture(scope="module")
def lenet():
    return summary(models.create("lenet5"), (28, 28, 1))


def test_lenet5_rows(lenet):
    assert [(r.path, r.kind, r.output_shape, r.params) for r in lenet.rows] == [
        ("conv1", "Conv", (28, 28, 6), 156),
        ("pool1", "MaxPool", (14, 14, 6), 0),
        ("conv2", "Conv", (10, 10, 16), 2416),
        ("pool2", "MaxPool", (5, 5, 16), 0),
        ("flatten", "Flatten", (400,), 0),
        ("fc1", "Dense", (120,), 48120),
        ("fc2", "Dense", (84,), 10164),
        ("fc3", "Dense", (10,), 850),
    ]
    assert lenet.rows[0].input_shape == (28, 28, 1) and lenet.input_shape == (28, 28, 1)
    assert lenet.output_shape == (10,)


def test_lenet5_formulas(lenet):
    conv0, pool0, conv1, _, flatten, dense0, *_ = lenet.rows
    assert conv0.size_formula == "H2 = W2 = (28 − 5 + 2·2)/1 + 1 = 28"
    assert conv0.params_formula == "(5·5·1)·6 + 6 = 156"
    assert pool0.size_formula == "H2 = W2 = (28 − 2)/2 + 1 = 14"
    assert conv1.size_formula == "H2 = W2 = (14 − 5)/1 + 1 = 10"
    assert conv1.params_formula == "(5·5·6)·16 + 16 = 2,416"
    assert flatten.size_formula == "5·5·16 = 400"
    assert dense0.params_formula == "400·120 + 120 = 48,120"


def test_lenet5_flops_by_hand(lenet):
    conv = 2 * (5 * 5 * 1 * 6 * 28 * 28) + 2 * (5 * 5 * 6 * 16 * 10 * 10)
    dense = 2 * (400 * 120 + 120 * 84 + 84 * 10)
    assert [r.flops for r in lenet.rows] == [235_200, 0, 480_000, 0, 0, 96_000, 20_160, 1_680]
    assert lenet.total_flops == conv + dense == 833_040
    assert lenet.total_params == 61_706 and lenet.total_state == 0


def test_floor_when_the_stride_does_not_divide():
    rows = {r.path: r for r in summary(models.create("resnet18", num_classes=1000), (224, 224, 3)).rows}
    assert rows["conv1"].size_formula == "H2 = W2 = ⌊(224 − 7 + 2·3)/2⌋ + 1 = 112"
    assert rows["conv1"].params_formula == "(7·7·3)·64 = 9,408"  # no bias before BatchNorm
    assert rows["maxpool"].size_formula == "H2 = W2 = ⌊(112 − 3 + 2·1)/2⌋ + 1 = 56"
    assert rows["bn1"].params_formula == "2·64 = 128"
    assert rows["pool"].size_formula == "mean over 7×7"


class Odd(nn.Module):
    """Dilation, asymmetric and SAME padding, groups, a shared layer and a flax.linen layer."""

    @nn.compact
    def __call__(self, x, train=False):
        x = layers.Conv(4, (3, 5), dilation=(2, 1), padding=((0, 1), (2, 2)), name="dilated")(x)
        x = layers.Conv(8, 3, stride=2, padding="SAME", groups=4, use_bias=False, name="grouped")(x)
        x = layers.AdaptiveAvgPool(3)(x)
        shared = layers.Dense(8, name="shared")
        x = shared(shared(x))
        return nn.Dense(2, name="flax_dense")(layers.Flatten()(x))


def test_general_size_formula_and_groups():
    result = summary(Odd(), (9, 10, 2))
    rows = {r.path: r for r in result.rows}
    # H: 9 + 0 + 1 - 2·(3 - 1) - 1 = 5 -> 6; W: 10 + 2 + 2 - 5 = 9 -> 10
    assert (
        rows["dilated"].size_formula
        == "H2 = (9 − (2·(3 − 1) + 1) + 0 + 1)/1 + 1 = 6, W2 = (10 − 5 + 2·2)/1 + 1 = 10"
    )
    assert rows["dilated"].output_shape == (6, 10, 4)
    # SAME at stride 2 pads H 6 -> (0, 1), W 10 -> (0, 1): ceil(size / 2)
    assert rows["grouped"].size_formula == "H2 = (6 − 3 + 0 + 1)/2 + 1 = 3, W2 = (10 − 3 + 0 + 1)/2 + 1 = 5"
    assert rows["grouped"].output_shape == (3, 5, 8)
    assert rows["grouped"].params_formula == "(3·3·4/4)·8 = 72"
    assert rows["grouped"].params == F.conv_param_count((3, 3), 4, 8, groups=4, use_bias=False) == 72
    assert rows["grouped"].flops == 2 * 9 * 1 * 8 * 3 * 5
    assert rows["AdaptiveAvgPool_0"].size_formula.startswith("H2 = 3 (adaptive from 3")


def test_shared_and_foreign_layers(lenet):
    result = summary(Odd(), (9, 10, 2))
    shared = [r for r in result.rows if r.path == "shared"]
    assert [r.params for r in shared] == [72, 0]
    assert shared[1].params_formula.startswith("shared")
    assert [r.flops for r in shared] == [2 * 8 * 8 * 3 * 3] * 2  # applied at each of the 3x3 cells
    foreign = next(r for r in result.rows if r.path == "flax_dense")
    assert foreign.kind == "Dense" and foreign.params == 72 * 2 + 2 and foreign.flops is None
    assert result.total_params == sum(r.params for r in result.rows)
    assert "?" in str(result)


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_totals_equal_torchvision(name):
    result = summary(models.create(name, num_classes=1000), (224, 224, 3))
    assert result.total_params == sum(r.params for r in result.rows) == TORCHVISION[name]
    convs = [r for r in result.rows if r.kind == "Conv"]
    assert all(r.params_formula.endswith(f"= {r.params:,}") for r in convs)


def test_flops_match_torchvision_multiply_accumulates():
    # torchvision's model tables: GFLOPS (multiply-accumulates) 1.81, 4.09, 15.47 and 0.30
    for name, gmacs in [("resnet18", 1.81), ("resnet50", 4.09), ("vgg16", 15.47), ("mobilenet_v2", 0.30)]:
        flops = summary(models.create(name, num_classes=1000), (224, 224, 3)).total_flops
        assert round(flops / 2e9, 2) == gmacs, name


def _tabulate_total(model, shape) -> int:
    table = nn.tabulate(model, jax.random.PRNGKey(0))(jnp.zeros((1, *shape)))
    plain = re.sub(r"\x1b\[[0-9;]*m", "", table)
    return int(re.search(r"Total Parameters: ([\d,]+)", plain).group(1).replace(",", ""))


@pytest.mark.parametrize(
    "name, shape", [("lenet5", (28, 28, 1)), ("compact", (28, 28, 1)), ("resnet20", (32, 32, 3))]
)
def test_totals_agree_with_flax_tabulate(name, shape):
    model = models.create(name)
    result = summary(model, shape)
    assert result.total_params + result.total_state == _tabulate_total(model, shape)


class DropsWhenTraining(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = layers.Dense(4)(x)
        return layers.Dropout(0.5, deterministic=False)(x) if train else x


def test_kwargs_reach_a_linen_model_and_dtype():
    assert [r.kind for r in summary(DropsWhenTraining(), (3,)).rows] == ["Dense"]
    assert [r.kind for r in summary(DropsWhenTraining(), (3,), train=True).rows] == ["Dense", "Dropout"]
    assert summary(models.create("compact"), (28, 28, 1), dtype=jnp.bfloat16).total_params == 89_506


@pytest.mark.parametrize("extra", [{"train": True}, {"rngs": {"dropout": jax.random.PRNGKey(0)}}])
def test_nnx_models_take_no_rngs_or_kwargs(extra):
    """A zoo model's Linen form too is tabulated as its NNX model, in eval mode: nothing to pass."""
    for model in (models.create("compact"), models.create_nnx("compact", rngs=nnx.Rngs(0))):
        with pytest.raises(
            TypeError, match=f"summary passes rngs and \\*\\*kwargs \\({next(iter(extra))}\\)"
        ):
            summary(model, (28, 28, 1), **extra)


def test_text_and_html(lenet):
    text = str(lenet)
    assert text == repr(lenet)
    assert "LeNet5 on 28×28×1 inputs → 10" in text
    assert re.search(r"conv1\s+Conv\s+28×28×1 → 28×28×6\s+156\s+235,200\s+H2 = W2", text)
    assert "Total: 61,706 parameters, 833,040 FLOPs" in text
    html = lenet._repr_html_()
    assert html.count("<tr>") == 1 + len(lenet.rows) and "(5·5·1)·6 + 6 = 156" in html


def test_exported_from_the_package():
    assert jaxcnn.summary is summary and jaxcnn.Summary is Summary
    assert isinstance(summary(models.create("lenet5"), [28, 28, 1]).rows[0], Row)


@pytest.mark.parametrize("shape", [(28, 28), 28, (0, 28, 1), (28.0, 28, 1), "28,28,1"])
def test_bad_input_shape_is_named(shape):
    with pytest.raises((TypeError, ValueError), match="input_shape|needs inputs|expects images"):
        summary(models.create("lenet5"), shape)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match="model must be a flax.nnx.Module or a flax.linen.Module"):
        summary(lambda x: x, (28, 28, 1))


class OddNNX(nnx.Module):
    """`Odd` in NNX, with a flax.nnx layer in place of flax.linen's."""

    def __init__(self, rngs: nnx.Rngs):
        self.dilated = L.Conv(2, 4, (3, 5), dilation=(2, 1), padding=((0, 1), (2, 2)), rngs=rngs)
        self.grouped = L.Conv(4, 8, 3, stride=2, padding="SAME", groups=4, use_bias=False, rngs=rngs)
        self.pool, self.shared, self.flatten = L.AdaptiveAvgPool(3), L.Dense(8, 8, rngs=rngs), L.Flatten()
        self.flax_dense = nnx.Linear(72, 2, rngs=rngs)

    def __call__(self, x):
        x = self.pool(self.grouped(self.dilated(x)))
        return self.flax_dense(self.flatten(self.shared(self.shared(x))))


def test_nnx_rows_are_the_linen_rows():
    """jaxcnn's layers have the same rows in both APIs; the foreign layer counts in the totals only."""
    nnx_result, linen_result = summary(OddNNX(nnx.Rngs(0)), (9, 10, 2)), summary(Odd(), (9, 10, 2))
    described = lambda rows: [
        (r.kind, r.input_shape, r.output_shape, r.params, r.flops, r.size_formula, r.params_formula)
        for r in rows
        if r.path != "flax_dense"
    ]
    assert described(nnx_result.rows) == described(linen_result.rows)
    assert [r.path for r in nnx_result.rows] == ["dilated", "grouped", "pool", "shared", "shared", "flatten"]
    assert (
        nnx_result.total_params == linen_result.total_params == sum(r.params for r in nnx_result.rows) + 146
    )
    assert nnx_result.total_flops == sum(r.flops for r in nnx_result.rows)
    assert nnx_result.model == "OddNNX" and nnx_result.output_shape == (2,)


def test_zoo_models_tabulate_alike_in_both_apis():
    model = models.create_nnx("compact", rngs=nnx.Rngs(0))
    model.train()
    statistics = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    nnx_result = summary(model, (28, 28, 1))
    assert nnx_result.rows == summary(models.create("compact"), (28, 28, 1)).rows
    assert nnx_result.total_state == 2 * (2 * 24 + 2 * 40 + 2 * 64)  # running mean and var of 6 BatchNorms
    assert not model.bn1.use_running_average  # the model keeps its mode and statistics
    assert jax.tree.all(jax.tree.map(jnp.array_equal, nnx.state(model, nnx.BatchStat), statistics))


def test_convnext_rows_show_layer_norm_and_drop_path():
    """ConvNeXt's new layers: LayerNorm's 2·C parameters, DropPath without any; totals as torchvision's."""
    result = summary(models.create("convnext_tiny", num_classes=1000), (32, 32, 3))
    norms = [r for r in result.rows if r.kind == "LayerNorm"]
    assert norms[0].params_formula == "2·96 = 192" and norms[0].flops == 0
    drops = [r for r in result.rows if r.kind == "DropPath"]
    assert len(drops) == 18 and all(r.params == 0 and r.flops == 0 for r in drops)
    assert result.total_params == 28_589_128
