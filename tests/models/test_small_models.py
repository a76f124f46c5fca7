"""The foundation models: parameter counts, output shapes, train mode, minimum input sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn import nnx_layers as L
from jaxcnn.summary import summary

RNGS = {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def _init(name, shape, **kwargs):
    model = models.create(name, **kwargs)
    return model, model.init(RNGS, jnp.zeros(shape), train=False)


def test_lenet5_has_61706_parameters_by_hand():
    # (5*5*1)*6+6, (5*5*6)*16+16, 400*120+120, 120*84+84, 84*10+10
    by_hand = (25 * 6 + 6) + (150 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert by_hand == 61_706
    _, variables = _init("lenet5", (1, 28, 28, 1))
    assert _count(variables["params"]) == by_hand


def test_simple_cnn_matches_the_flax_example():
    _, variables = _init("simple_cnn", (1, 28, 28, 1))
    assert _count(variables["params"]) == 824_458


def test_compact_is_under_100k():
    _, variables = _init("compact", (1, 28, 28, 1))
    assert _count(variables["params"]) == 89_506 < 100_000
    assert set(variables) == {"params", "batch_stats"}


def test_allconv_has_no_dense_layer():
    model, variables = _init("allconv", (1, 32, 32, 3))
    assert set(variables["params"]) == {f"conv{k}" for k in range(1, 10)}
    assert not Z.held(model, (1, 32, 32, 3), (L.Dense, nnx.Linear))
    conv = lambda k, c_in, c_out: k * k * c_in * c_out + c_out  # noqa: E731
    by_hand = (
        conv(3, 3, 96)
        + 2 * conv(3, 96, 96)
        + conv(3, 96, 192)
        + 3 * conv(3, 192, 192)
        + conv(1, 192, 192)
        + conv(1, 192, 10)
    )
    assert _count(variables["params"]) == by_hand == 1_369_738  # All-CNN-C on CIFAR: "1.3M" in the paper


def test_fastcnn_parameters_by_hand():
    conv = lambda k, c_in, c_out: k * k * c_in * c_out  # noqa: E731 (no bias before BatchNorm)
    norm = lambda c: 2 * c  # noqa: E731 (scale and bias)
    for channels in (1, 3):
        by_hand = (
            (2 * 2 * channels * 24 + 24)  # the stem keeps its bias
            + conv(3, 24, 64) + norm(64) + conv(3, 64, 64) + norm(64)
            + conv(3, 64, 256) + norm(256) + conv(3, 256, 256) + norm(256)
            + conv(3, 256, 256) + norm(256) + conv(3, 256, 256) + norm(256)
            + 256 * 10  # the classifier has no bias
        )  # fmt: skip
        _, variables = _init("fastcnn", (1, 28, 28, channels))
        assert _count(variables["params"]) == by_hand == 1_972_504 + 96 * channels


def test_fastcnn_scales_its_logits_and_pools_to_3x3():
    model, variables = _init("fastcnn", (2, 28, 28, 1))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 28, 28, 1)), jnp.float32)
    logits = model.apply(variables, x)
    unscaled = models.create("fastcnn", logit_scale=1.0).apply(variables, x)
    np.testing.assert_allclose(logits, unscaled / 9, rtol=1e-6)
    # 28 -> 27 (2x2 stem, VALID) -> 13 -> 6 -> 3 (2x2 pooling, rounding down)
    rows = {row.path: row for row in summary(model, (28, 28, 1)).rows}
    assert rows["stem"].output_shape == (27, 27, 24)
    assert [rows[f"group{i}/pool"].output_shape for i in (1, 2, 3)] == [
        (13, 13, 64),
        (6, 6, 256),
        (3, 3, 256),
    ]
    assert rows["group3/conv2"].output_shape == (3, 3, 256)


@pytest.mark.parametrize("name", ["lenet5", "simple_cnn", "allconv", "compact", "fastcnn"])
@pytest.mark.parametrize("shape, classes", [((3, 28, 28, 1), 10), ((2, 32, 32, 3), 7)])
def test_logits_shape_in_both_modes(name, shape, classes):
    model, variables = _init(name, shape, num_classes=classes)
    x = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
    logits = model.apply(variables, x, train=False)
    assert logits.shape == (shape[0], classes) and logits.dtype == jnp.float32
    logits, updates = model.apply(variables, x, train=True, rngs=RNGS, mutable=["batch_stats"])
    assert logits.shape == (shape[0], classes)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert set(updates) == set(variables) - {"params"}


@pytest.mark.parametrize(
    "name, minimum", [("lenet5", 12), ("simple_cnn", 4), ("allconv", 9), ("compact", 4), ("fastcnn", 9)]
)
def test_input_below_minimum_names_it(name, minimum):
    model = models.create(name)
    x = jnp.zeros((1, minimum - 1, minimum + 5, 1))
    with pytest.raises(ValueError, match=f"{name} needs inputs of at least {minimum}x{minimum}"):
        model.init(RNGS, x)
    model.init(RNGS, jnp.zeros((1, minimum, minimum, 1)))  # the minimum itself works


def test_models_need_image_batches():
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        models.create("lenet5").init(RNGS, jnp.zeros((28, 28, 1)))


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model, variables = _init("compact", (2, 28, 28, 1), dtype=jnp.bfloat16)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(variables["params"]))
    assert model.apply(variables, jnp.ones((2, 28, 28, 1))).dtype == jnp.float32


def test_lenet5_original_variant():
    model, variables = _init("lenet5", (1, 32, 32, 1), pool="avg", activation=jnp.tanh)
    assert model.apply(variables, jnp.ones((1, 32, 32, 1))).shape == (1, 10)
    with pytest.raises(ValueError, match="pool"):
        models.create("lenet5", pool="min").init(RNGS, jnp.zeros((1, 28, 28, 1)))
