"""Layers: parameter names and shapes, equality with the functional call, dtype handling."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import functional as F
from jaxcnn import layers

KEY = jax.random.PRNGKey(0)


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize(
    "kernel_size, x_shape",
    [(3, (2, 9, 4)), ((3, 5), (2, 9, 8, 4)), (2, (2, 5, 6, 7, 4))],
    ids=["1d", "2d", "3d"],
)
def test_conv_params_and_functional_equality(kernel_size, x_shape):
    x = _random(x_shape)
    layer = layers.Conv(6, kernel_size, stride=2, padding="SAME", dilation=1, groups=2)
    variables = layer.init(KEY, x)
    params = variables["params"]
    spatial = len(x_shape) - 2
    window = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * spatial
    assert set(params) == {"kernel", "bias"}
    assert params["kernel"].shape == (*window, 2, 6)
    assert params["bias"].shape == (6,)
    expected = F.conv(x, params["kernel"], params["bias"], stride=2, padding="SAME", groups=2)
    np.testing.assert_array_equal(layer.apply(variables, x), expected)


def test_conv_without_bias_has_only_a_kernel():
    variables = layers.Conv(3, 3, use_bias=False).init(KEY, jnp.zeros((1, 5, 5, 2)))
    assert set(variables["params"]) == {"kernel"}


def test_dense_params_and_functional_equality():
    x = _random((3, 7))
    layer = layers.Dense(5)
    variables = layer.init(KEY, x)
    assert {k: v.shape for k, v in variables["params"].items()} == {"kernel": (7, 5), "bias": (5,)}
    p = variables["params"]
    np.testing.assert_array_equal(layer.apply(variables, x), F.dense(x, p["kernel"], p["bias"]))


@pytest.mark.parametrize(
    "layer, fn",
    [
        (layers.MaxPool(3, 2, 1), lambda x: F.max_pool(x, 3, 2, 1)),
        (layers.AvgPool(3, 2, 1, count_include_pad=False), lambda x: F.avg_pool(x, 3, 2, 1, False)),
        (layers.GlobalAvgPool(), F.global_avg_pool),
        (layers.GlobalMaxPool(), F.global_max_pool),
        (layers.AdaptiveAvgPool((3, 2)), lambda x: F.adaptive_avg_pool(x, (3, 2))),
        (layers.AdaptiveMaxPool(4), lambda x: F.adaptive_max_pool(x, 4)),
        (layers.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
    ],
)
def test_parameterless_layers_call_functional(layer, fn):
    x = _random((2, 9, 7, 3))
    variables = layer.init(KEY, x)
    assert not variables.get("params")
    np.testing.assert_array_equal(layer.apply(variables, x), fn(x))


def test_dropout_uses_the_dropout_stream_and_is_identity_when_deterministic():
    x = _random((4, 10))
    layer = layers.Dropout(0.5)
    np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
    key = jax.random.PRNGKey(3)
    y = layer.apply({}, x, deterministic=False, rngs={"dropout": key})
    kept = y != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(y[kept], (x * 2)[kept], rtol=1e-6)


def test_dropout_without_mode_raises():
    with pytest.raises(ValueError, match="deterministic"):
        layers.Dropout(0.5).apply({}, jnp.ones((2, 2)))


def test_batch_norm_train_and_eval():
    x = _random((8, 5, 5, 3)) * 3 + 1
    layer = layers.BatchNorm(momentum=0.9, epsilon=1e-5)
    variables = layer.init(KEY, x, use_running_average=False)
    assert {k: v.shape for k, v in variables["params"].items()} == {"scale": (3,), "bias": (3,)}
    assert {k: v.shape for k, v in variables["batch_stats"].items()} == {"mean": (3,), "var": (3,)}
    y, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    mean, var = np.mean(np.asarray(x), axis=(0, 1, 2)), np.var(np.asarray(x), axis=(0, 1, 2))
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    evaluated = layer.apply({**variables, **updates}, x, use_running_average=True)
    expected = (x - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-5)
    np.testing.assert_allclose(evaluated, expected, rtol=1e-4, atol=1e-5)


def test_batch_norm_matches_torch_in_train_mode_in_values_and_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 4, 4, 5)) * 2 + 1).astype(np.float32)
    cotangent = rng.standard_normal(x.shape).astype(np.float32)
    torch_layer = torch.nn.BatchNorm2d(5).train()
    torch_x = torch.from_numpy(x.transpose(0, 3, 1, 2)).requires_grad_()
    reference = torch_layer(torch_x)
    reference.backward(torch.from_numpy(cotangent.transpose(0, 3, 1, 2)))
    layer = layers.BatchNorm(use_running_average=False)
    variables = layer.init(KEY, x)

    def apply(params, x):
        return layer.apply({**variables, "params": params}, x, mutable=["batch_stats"])[0]

    y, vjp = jax.vjp(apply, variables["params"], jnp.asarray(x))
    params_grad, x_grad = vjp(jnp.asarray(cotangent))
    nchw = (0, 2, 3, 1)
    np.testing.assert_allclose(y, reference.detach().numpy().transpose(nchw), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(x_grad, torch_x.grad.numpy().transpose(nchw), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params_grad["scale"], torch_layer.weight.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params_grad["bias"], torch_layer.bias.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_bfloat16_compute_with_float32_params():
    x = _random((2, 8, 8, 3))
    layer = layers.Conv(4, 3, dtype=jnp.bfloat16)
    variables = layer.init(KEY, x)
    assert variables["params"]["kernel"].dtype == jnp.float32
    assert layer.apply(variables, x).dtype == jnp.bfloat16


@pytest.mark.parametrize(
    "layer, match",
    [
        (layers.Conv(0, 3), "features"),
        (layers.Conv(4, 3, groups=0), "groups"),
        (layers.Dense(-1), "features"),
    ],
)
def test_bad_layer_arguments(layer, match):
    with pytest.raises(ValueError, match=match):
        layer.init(KEY, jnp.zeros((1, 6, 6, 2)))


def test_conv_groups_not_dividing_channels():
    with pytest.raises(ValueError, match="groups"):
        layers.Conv(4, 3, groups=3).init(KEY, jnp.zeros((1, 6, 6, 2)))
    with pytest.raises(ValueError, match="groups=4 must divide the output channels C_out=6"):
        layers.Conv(6, 3, groups=4).init(KEY, jnp.zeros((1, 6, 6, 4)))


def test_layers_compose_in_a_module():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(layers.Conv(4, 3)(x))
            x = layers.MaxPool(2)(x)
            return layers.Dense(3)(layers.Flatten()(x))

    x = jnp.ones((2, 8, 8, 1))
    assert Net().apply(Net().init(KEY, x), x).shape == (2, 3)


CONV = ["kernel_size", "stride", "padding", "dilation", "groups", "padding_mode", "use_bias", "dtype"]
NORM = ["use_scale", "use_bias", "dtype", "param_dtype", "scale_init", "bias_init"]


@pytest.mark.parametrize(
    "name, attributes",
    [
        ("Conv", ["features", *CONV, "param_dtype", "kernel_init", "bias_init", "precision", "impl"]),
        ("Dense", ["features", "use_bias", "dtype", "param_dtype", "kernel_init", "bias_init", "precision"]),
        ("MaxPool", ["window", "stride", "padding", "dilation", "ceil_mode", "impl"]),
        ("Flatten", []),
        ("Dropout", ["rate", "broadcast_dims", "deterministic", "rng_collection"]),
        ("DropPath", ["rate", "deterministic", "rng_collection"]),  # no broadcast_dims: one draw per example
        ("BatchNorm", ["use_running_average", "momentum", "epsilon", "axis_name", *NORM]),
        ("LayerNorm", ["epsilon", *NORM]),
    ],
)
def test_linen_forms_take_the_nnx_arguments_the_input_does_not_decide(name, attributes):
    """The attributes, in order (so positional arguments too), of the Linen forms made from the NNX layers."""
    fields = [field.name for field in dataclasses.fields(getattr(layers, name))]
    assert fields == [*attributes, "parent", "name"]


def test_linen_forms_draw_their_initial_weights_as_flax_linen():
    x = _random((2, 6, 6, 3))
    ours = layers.Conv(4, (3, 3)).init(KEY, x)["params"]
    theirs = nn.Conv(4, (3, 3)).init(KEY, x)["params"]
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_linen_forms_check_their_arguments_as_the_nnx_layers():
    with pytest.raises(ValueError, match="momentum"):
        layers.BatchNorm(momentum=1.5).init(KEY, jnp.ones((2, 3)), use_running_average=True)
    with pytest.raises(ValueError, match="^features must be an int >= 1, got 0"):  # Linen's name
        layers.Dense(0).init(KEY, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="takes no call argument train"):
        layers.BatchNorm(use_running_average=True).init(KEY, jnp.ones((2, 3)), train=False)


def test_weights_of_another_shape_are_named():
    variables = layers.Conv(4, 3, name="conv").init(KEY, jnp.ones((1, 6, 6, 2)))
    with pytest.raises(ValueError, match=r"kernel has shape \(3, 3, 2, 4\); this input needs \(3, 3, 5, 4\)"):
        layers.Conv(4, 3).apply(variables, jnp.ones((1, 6, 6, 5)))
