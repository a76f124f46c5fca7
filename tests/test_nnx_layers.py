"""NNX layers: the Linen twins' parameter names and shapes, the same outputs as the Linen layer with the
same weights and as the functional call, modes and views, Dropout keys, argument errors, and
jit/grad/vmap through `nnx.split`/`nnx.merge`."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import functional as F
from jaxcnn import layers
from jaxcnn import nnx_layers as L

KEY = jax.random.PRNGKey(0)


def _random(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _variables(layer: nnx.Module) -> dict:
    """An NNX layer's weights as Linen variables: `params` and (if any) `batch_stats`."""
    variables = {
        "params": nnx.to_pure_dict(nnx.state(layer, nnx.Param)),
        "batch_stats": nnx.to_pure_dict(nnx.state(layer, nnx.BatchStat)),
    }
    return {name: tree for name, tree in variables.items() if tree}


def _shapes(tree) -> dict:
    return jax.tree.map(jnp.shape, dict(tree))


def check_twin(nnx_layer: nnx.Module, linen_layer: nn.Module, x: jax.Array) -> tuple[jax.Array, dict]:
    """The NNX layer holds exactly the variables (names, shapes) the Linen layer creates, and with those
    weights the two compute the same output, bit for bit. Returns the output and the weights."""
    variables = _variables(nnx_layer)
    assert _shapes(variables) == _shapes(jax.eval_shape(linen_layer.init, KEY, x))
    y = nnx_layer(x)
    np.testing.assert_array_equal(linen_layer.apply(variables, x), y)
    return y, variables


CONV_SETTINGS = [
    {"stride": 2, "padding": "SAME", "groups": 2},
    {"stride": 1, "padding": 1, "dilation": 2, "use_bias": False},
]


@pytest.mark.parametrize("settings", CONV_SETTINGS, ids=["strided-grouped", "dilated-nobias"])
@pytest.mark.parametrize(
    "kernel_size, x_shape",
    [(3, (2, 9, 4)), ((3, 5), (2, 9, 8, 4)), (2, (2, 5, 6, 7, 4))],
    ids=["1d", "2d", "3d"],
)
def test_conv_is_its_linen_twin_and_the_functional_call(kernel_size, x_shape, settings):
    x, ndim = _random(x_shape), len(x_shape) - 2
    conv = L.Conv(4, 6, kernel_size, spatial_dims=ndim, **settings, rngs=nnx.Rngs(0))
    window = kernel_size if isinstance(kernel_size, tuple) else (kernel_size,) * ndim
    groups = settings.get("groups", 1)
    assert conv.kernel.shape == (*window, 4 // groups, 6)
    assert (conv.bias is None) == (settings.get("use_bias") is False)
    y, variables = check_twin(conv, layers.Conv(6, kernel_size, **settings), x)
    params = variables["params"]
    functional = {k: v for k, v in settings.items() if k != "use_bias"}
    np.testing.assert_array_equal(y, F.conv(x, params["kernel"], params.get("bias"), **functional))


def test_dense_is_its_linen_twin_and_the_functional_call():
    x = _random((3, 7))
    dense = L.Dense(7, 5, rngs=nnx.Rngs(0))
    y, variables = check_twin(dense, layers.Dense(5), x)
    assert _shapes(variables) == {"params": {"kernel": (7, 5), "bias": (5,)}}
    np.testing.assert_array_equal(y, F.dense(x, variables["params"]["kernel"], variables["params"]["bias"]))
    assert set(_variables(L.Dense(7, 5, use_bias=False, rngs=nnx.Rngs(0)))["params"]) == {"kernel"}


@pytest.mark.parametrize(
    "nnx_layer, linen_layer, fn",
    [
        (L.MaxPool(3, 2, 1), layers.MaxPool(3, 2, 1), lambda x: F.max_pool(x, 3, 2, 1)),
        (L.AvgPool(3, 2, 1, False), layers.AvgPool(3, 2, 1, False), lambda x: F.avg_pool(x, 3, 2, 1, False)),
        (L.GlobalAvgPool(), layers.GlobalAvgPool(), F.global_avg_pool),
        (L.GlobalMaxPool(), layers.GlobalMaxPool(), F.global_max_pool),
        (L.AdaptiveAvgPool((3, 2)), layers.AdaptiveAvgPool((3, 2)), lambda x: F.adaptive_avg_pool(x, (3, 2))),
        (L.AdaptiveMaxPool(4), layers.AdaptiveMaxPool(4), lambda x: F.adaptive_max_pool(x, 4)),
        (L.Flatten(), layers.Flatten(), lambda x: x.reshape(x.shape[0], -1)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nnx.Module) else "",
)
def test_parameterless_layers_are_their_twins_and_the_functional_call(nnx_layer, linen_layer, fn):
    x = _random((2, 9, 7, 3))
    y, variables = check_twin(nnx_layer, linen_layer, x)
    assert not variables and not nnx.state(nnx_layer)
    np.testing.assert_array_equal(y, fn(x))


@pytest.mark.parametrize("api", ["nnx", "linen"])
@pytest.mark.parametrize(
    "layer, impl, lowered_by",
    [
        ("conv", "xla", "conv_general_dilated"),
        ("conv", "im2col", "dot_general"),
        ("pool", "reshape", "argmax"),
    ],
)
def test_impl_reaches_the_functional_call(api, layer, impl, lowered_by):
    """The layers hand `impl` to `jaxcnn.functional`: its lowering shows in the gradient's jaxpr."""
    x = _random((2, 8, 8, 2))
    if layer == "conv":
        module = (
            L.Conv(2, 4, 3, impl=impl, rngs=nnx.Rngs(0)) if api == "nnx" else layers.Conv(4, 3, impl=impl)
        )
        other = {"xla": "dot_general", "im2col": "conv_general_dilated"}[impl]
    else:
        module = L.MaxPool(2, impl=impl) if api == "nnx" else layers.MaxPool(2, impl=impl)
        other = "reduce_window"
    if api == "nnx":
        call = lambda x: module(x)
    else:
        variables = module.init(KEY, x)
        call = lambda x: module.apply(variables, x)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(call(x) ** 2)))(x))
    assert lowered_by in jaxpr and other not in jaxpr


def test_bfloat16_compute_with_float32_params_as_linen():
    x = _random((2, 8, 8, 3))
    conv = L.Conv(3, 4, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert conv.kernel.dtype == jnp.float32
    y, _ = check_twin(conv, layers.Conv(4, 3, dtype=jnp.bfloat16), x)
    assert y.dtype == jnp.bfloat16


def test_batch_norm_statistics_move_exactly_as_the_linen_layers():
    x1, x2 = _random((8, 5, 5, 3)) * 3 + 1, _random((8, 5, 5, 3), seed=1) * 2 - 1
    norm = L.BatchNorm(3, momentum=0.8, rngs=nnx.Rngs(0))
    linen = layers.BatchNorm(momentum=0.8)
    variables = _variables(norm)
    assert _shapes(variables) == _shapes(
        jax.eval_shape(lambda x: linen.init(KEY, x, use_running_average=False), x1)
    )
    assert _shapes(variables) == {
        "params": {"scale": (3,), "bias": (3,)},
        "batch_stats": {"mean": (3,), "var": (3,)},
    }
    for x in (x1, x2):  # training, the default: batch statistics, and the running ones move
        expected, updates = linen.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        np.testing.assert_array_equal(norm(x), expected)
        variables = {**variables, **updates}
        np.testing.assert_array_equal(norm.mean[...], updates["batch_stats"]["mean"])
        np.testing.assert_array_equal(norm.var[...], updates["batch_stats"]["var"])
    (m1, m2), (v1, v2) = ([f(np.asarray(x), axis=(0, 1, 2)) for x in (x1, x2)] for f in (np.mean, np.var))
    np.testing.assert_allclose(norm.mean[...], 0.8 * 0.2 * m1 + 0.2 * m2, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(norm.var[...], 0.8 * (0.8 + 0.2 * v1) + 0.2 * v2, rtol=1e-5, atol=1e-7)
    norm.eval()  # the running statistics, which stay where they are
    y = norm(x1)
    np.testing.assert_array_equal(y, linen.apply(variables, x1, use_running_average=True))
    np.testing.assert_allclose(y, (x1 - norm.mean[...]) / np.sqrt(norm.var[...] + 1e-5), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(norm.mean[...], variables["batch_stats"]["mean"])


def test_batch_norm_modes_views_and_call_argument():
    x = _random((6, 4, 4, 3)) + 2
    norm = L.BatchNorm(3, rngs=nnx.Rngs(0))
    assert not norm.use_running_average  # training by default, as flax.nnx.BatchNorm
    frozen = nnx.view(norm, use_running_average=True)
    np.testing.assert_allclose(frozen(x), x / np.sqrt(1 + 1e-5), rtol=1e-6)  # running mean 0, var 1
    np.testing.assert_array_equal(norm.mean[...], 0.0)
    assert not norm.use_running_average  # a view leaves the layer as it was ...
    norm(x)
    np.testing.assert_array_equal(frozen.mean[...], norm.mean[...])  # ... and shares its statistics
    moved = np.asarray(norm.mean[...])
    norm(x, use_running_average=True)  # the call's argument overrides the mode
    np.testing.assert_array_equal(norm.mean[...], moved)
    norm.eval()
    assert norm.use_running_average
    norm.train()
    assert not norm.use_running_average


def test_dropout_modes_views_and_call_argument():
    x = jnp.ones((4, 100))
    drop = L.Dropout(0.5, rngs=nnx.Rngs(dropout=1))
    y = drop(x)  # training by default, as flax.nnx.Dropout
    assert 0.3 < float(jnp.mean(y == 0)) < 0.7 and set(np.unique(np.asarray(y))) == {0.0, 2.0}
    np.testing.assert_array_equal(nnx.view(drop, deterministic=True)(x), x)
    assert not drop.deterministic
    np.testing.assert_array_equal(drop(x, deterministic=True), x)
    drop.eval()
    np.testing.assert_array_equal(drop(x), x)
    drop.train()
    assert bool(jnp.any(drop(x) == 0))


def test_dropout_draws_as_flax_nnx_dropout():
    """Keys forked from `rngs` at construction, or given to the call, which takes precedence."""
    x, rate = _random((3, 64)), 0.4
    drop, reference = L.Dropout(rate, rngs=nnx.Rngs(dropout=7)), nnx.Dropout(rate, rngs=nnx.Rngs(dropout=7))
    first = drop(x)
    np.testing.assert_array_equal(first, reference(x))
    second = drop(x)
    assert not np.array_equal(first, second)  # the stream moves on
    np.testing.assert_array_equal(second, reference(x))
    key = jax.random.PRNGKey(3)
    np.testing.assert_array_equal(drop(x, rngs=key), F.dropout(x, rate, key=key))
    np.testing.assert_array_equal(drop(x, rngs=nnx.Rngs(dropout=3)), reference(x, rngs=nnx.Rngs(dropout=3)))
    unseeded = L.Dropout(rate)
    np.testing.assert_array_equal(
        unseeded(x, rngs=nnx.Rngs(dropout=3)["dropout"]),
        F.dropout(x, rate, key=jax.random.fold_in(jax.random.key(3), 0)),
    )
    with pytest.raises(ValueError, match="rngs"):
        unseeded(x)
    np.testing.assert_array_equal(L.Dropout(0.0)(x), x)  # nothing to draw


class TwoDropouts(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, rate: float = 0.5):
        self.first, self.second = L.Dropout(rate, rngs=rngs), L.Dropout(rate, rngs=rngs)

    def __call__(self, x):
        return self.first(x), self.second(x)


def test_reseed_dropout_restarts_every_stream_from_the_key():
    x = jnp.ones((2, 64))
    model = TwoDropouts(nnx.Rngs(dropout=0))
    first, second = model(x)
    assert not np.array_equal(first, second)  # layers forked from one Rngs draw different masks
    key = jax.random.PRNGKey(5)
    L.reseed_dropout(model, key)
    reseeded = model(x)
    assert not np.array_equal(*reseeded)
    model(x)  # the streams move on ...
    L.reseed_dropout(model, key)  # ... and restart
    np.testing.assert_array_equal(model(x), reseeded)
    # the i-th Dropout in graph order draws from fold_in(key, i), its count from 0
    typed = jax.random.wrap_key_data(key)
    for i, mask in enumerate(reseeded):
        np.testing.assert_array_equal(
            mask, F.dropout(x, 0.5, key=jax.random.fold_in(jax.random.fold_in(typed, i), 0))
        )
    other = TwoDropouts(nnx.Rngs(dropout=9))  # another seed and history: the same masks once reseeded
    other(x)
    L.reseed_dropout(other, typed)  # a typed key works as its raw data
    np.testing.assert_array_equal(other(x), reseeded)


def test_has_dropout():
    assert L.has_dropout(TwoDropouts(nnx.Rngs(0)))
    assert not L.has_dropout(TwoDropouts(nnx.Rngs(0), rate=0.0))
    assert not L.has_dropout(L.Conv(1, 2, 3, rngs=nnx.Rngs(0)))


def _never(*args):
    raise AssertionError("a parameter was initialised before the arguments were checked")


NO_INIT = {"kernel_init": _never, "bias_init": _never}


@pytest.mark.parametrize(
    "make, error, argument",
    [
        (lambda r: L.Conv(0, 4, 3, **NO_INIT, rngs=r), ValueError, "in_features"),
        (lambda r: L.Conv(2.0, 4, 3, **NO_INIT, rngs=r), TypeError, "in_features"),
        (lambda r: L.Conv(2, 0, 3, **NO_INIT, rngs=r), ValueError, "out_features"),
        (lambda r: L.Conv(2, 4, 0, **NO_INIT, rngs=r), ValueError, "kernel_size"),
        (lambda r: L.Conv(2, 4, (3, "3"), **NO_INIT, rngs=r), TypeError, "kernel_size"),
        (lambda r: L.Conv(2, 4, 3, spatial_dims=0, **NO_INIT, rngs=r), ValueError, "spatial_dims"),
        (lambda r: L.Conv(2, 4, 3, groups=0, **NO_INIT, rngs=r), ValueError, "groups"),
        (
            lambda r: L.Conv(4, 4, 3, groups=3, **NO_INIT, rngs=r),
            ValueError,
            "groups=3 must divide the input",
        ),
        (
            lambda r: L.Conv(4, 6, 3, groups=4, **NO_INIT, rngs=r),
            ValueError,
            "groups=4 must divide the output",
        ),
        (lambda r: L.Conv(2, 4, 3, impl="fast", **NO_INIT, rngs=r), ValueError, "impl"),
        (lambda r: L.MaxPool(2, impl="fast"), ValueError, "impl"),
        (lambda r: L.Dense(0, 3, **NO_INIT, rngs=r), ValueError, "in_features"),
        (lambda r: L.Dense(3, -1, **NO_INIT, rngs=r), ValueError, "out_features"),
        (lambda r: L.Dense(3, 2.5, **NO_INIT, rngs=r), TypeError, "out_features"),
        (lambda r: L.BatchNorm(0, scale_init=_never, bias_init=_never, rngs=r), ValueError, "num_features"),
        (lambda r: L.BatchNorm(3, momentum=1.5, scale_init=_never, rngs=r), ValueError, "momentum"),
        (lambda r: L.BatchNorm(3, epsilon=-1e-5, scale_init=_never, rngs=r), ValueError, "epsilon"),
        (lambda r: L.Dropout(1.0, rngs=r), ValueError, "rate"),
        (lambda r: L.Dropout(-0.1, rngs=r), ValueError, "rate"),
        (lambda r: L.Dropout("0.5", rngs=r), TypeError, "rate"),
    ],
)
def test_bad_constructor_arguments_are_named_before_any_parameter_is_made(make, error, argument):
    with pytest.raises(error, match=argument):
        make(nnx.Rngs(0))


def _recording(calls: list):
    return L.observe_calls(lambda layer, inputs, outputs: calls.append((layer, inputs, outputs)))


def test_observe_calls_reports_every_layer_call_in_order():
    dense = L.Dense(3, 2, rngs=nnx.Rngs(0))
    flatten = L.Flatten()
    x = _random((2, 1, 3))
    seen, outer = [], []
    with _recording(outer):
        with _recording(seen):
            y = dense(flatten(x))
        dense(flatten(x))
    dense(flatten(x))  # outside: nobody is told
    assert [layer for layer, *_ in seen] == [flatten, dense]
    assert [layer for layer, *_ in outer] == [flatten, dense] * 2
    (_, flat_in, flat_out), (_, dense_in, dense_out) = seen
    np.testing.assert_array_equal(flat_in, x)
    np.testing.assert_array_equal(dense_in, flat_out)
    np.testing.assert_array_equal(dense_out, y)


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dropout: float = 0.0):
        self.conv, self.norm = L.Conv(1, 4, 3, rngs=rngs), L.BatchNorm(4, rngs=rngs)
        self.pool, self.flatten = L.MaxPool(2), L.Flatten()
        self.drop, self.dense = L.Dropout(dropout, rngs=rngs), L.Dense(64, 3, rngs=rngs)

    def __call__(self, x):
        x = self.pool(jax.nn.relu(self.norm(self.conv(x))))
        return self.dense(self.drop(self.flatten(x)))


class LinenNet(nn.Module):
    """`Net` in Linen, without dropout: the same parameter names."""

    @nn.compact
    def __call__(self, x, train: bool):
        x = layers.BatchNorm(use_running_average=not train, name="norm")(layers.Conv(4, 3, name="conv")(x))
        x = layers.Flatten()(layers.MaxPool(2)(jax.nn.relu(x)))
        return layers.Dense(3, name="dense")(x)


def test_jit_through_split_and_merge_moves_the_state_as_eager_calls():
    x = _random((4, 8, 8, 1))
    net = Net(nnx.Rngs(0), dropout=0.5)
    graphdef, state = nnx.split(net)

    @jax.jit
    def step(state, x):
        model = nnx.merge(graphdef, state)
        return model(x), nnx.state(model)

    eager = nnx.clone(net)
    for _ in range(2):  # the dropout stream and BatchNorm statistics move on in both
        y, state = step(state, x)
        np.testing.assert_allclose(y, eager(x), rtol=1e-5, atol=1e-6)
    nnx.update(net, state)
    weights = lambda model: nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), weights(net), weights(eager))
    assert int(net.drop.rngs.count[...]) == int(eager.drop.rngs.count[...]) == 2


def test_grad_through_split_equals_the_linen_gradient():
    """Training mode, BatchNorm on batch statistics: both APIs give the same gradients and statistics."""
    x = _random((4, 8, 8, 1))
    net = Net(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(net, nnx.Param, ...)

    def nnx_loss(params, rest):
        model = nnx.merge(graphdef, params, rest, copy=True)  # Variables of this trace: BatchNorm moves them
        return jnp.sum(model(x) ** 2), nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))

    def linen_loss(params, batch_stats):
        variables = {"params": params, "batch_stats": batch_stats}
        y, updates = LinenNet().apply(variables, x, train=True, mutable=["batch_stats"])
        return jnp.sum(y**2), updates["batch_stats"]

    variables = _variables(net)
    expected = jax.jit(jax.grad(linen_loss, has_aux=True))(variables["params"], variables["batch_stats"])
    grads, statistics = jax.jit(jax.grad(nnx_loss, has_aux=True))(params, rest)
    got = (nnx.to_pure_dict(grads), statistics)
    assert _shapes(got[0]) == _shapes(expected[0]) and _shapes(got[1]) == _shapes(expected[1])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, expected)


def test_vmap_over_stacked_models_is_each_model():
    x = _random((3, 8, 8, 1))
    nets = [Net(nnx.Rngs(seed)) for seed in range(3)]
    for net in nets:
        net.eval()
    graphdef = nnx.graphdef(nets[0])
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *(nnx.state(net) for net in nets))
    outputs = jax.vmap(lambda state, x: nnx.merge(graphdef, state)(x), in_axes=(0, None))(stacked, x)
    for out, net in zip(outputs, nets, strict=True):
        np.testing.assert_allclose(out, net(x), rtol=1e-5, atol=1e-6)
