"""Misuse, generated: every bad argument is a ValueError/TypeError naming it, raised before XLA.

Hypothesis draws a valid call, breaks exactly one argument, and checks the exception's type and that
its message names the argument. The hand-written cases of each module's own tests pin exact messages.
"""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxcnn import data, functional, layers, models, nnx_layers
from jaxcnn.training import default_config, validate_config

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _raises_naming(call, argument: str):
    with pytest.raises((ValueError, TypeError)) as error:
        call()
    assert type(error.value) in (ValueError, TypeError), f"{type(error.value).__name__}: {error.value}"
    assert argument in str(error.value), f"{argument!r} not named in: {error.value}"


@st.composite
def valid_conv(draw):
    """A valid `conv` call: x `(N, *spatial, C)`, kernel, keyword arguments."""
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    window = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    spatial = tuple(w + draw(st.integers(2, 4)) for w in window)
    x = jnp.ones((1, *spatial, c_in))
    kernel = jnp.ones((*window, c_in // groups, c_out))
    return x, kernel, {"stride": 1, "padding": "VALID", "dilation": 1, "groups": groups}


def _spatial_tuple_of_wrong_length(ndim):
    return st.integers(1, 3).map(lambda v: (v,) * (ndim + 1))


CONV_MISUSES = {
    "stride": lambda ndim: st.one_of(
        st.integers(-3, 0), st.floats(1.1, 2.9), _spatial_tuple_of_wrong_length(ndim), st.just("2")
    ),
    "dilation": lambda ndim: st.one_of(st.integers(-3, 0), _spatial_tuple_of_wrong_length(ndim)),
    "padding": lambda ndim: st.one_of(
        st.sampled_from(["FULL", "same ", "causl", ""]),  # ("causal" is valid in 1-d)
        st.integers(-4, -1),
        _spatial_tuple_of_wrong_length(ndim),
        st.just(((1, -1),) * ndim),
    ),
    "groups": lambda ndim: st.one_of(st.integers(-2, 0), st.just(3)),
    "padding_mode": lambda ndim: st.sampled_from(["mirror", "wrap", "", "edge"]),
}


@SETTINGS
@given(call=valid_conv(), data_=st.data())
def test_conv_names_the_broken_argument(call, data_):
    x, kernel, kwargs = call
    functional.conv(x, kernel, **kwargs)  # the drawn call is valid
    argument = data_.draw(st.sampled_from(sorted(CONV_MISUSES)))
    kwargs[argument] = data_.draw(CONV_MISUSES[argument](x.ndim - 2))
    _raises_naming(lambda: functional.conv(x, kernel, **kwargs), argument)
    _raises_naming(lambda: functional.convolve(x, kernel, **kwargs), argument)


@SETTINGS
@given(call=valid_conv(), which=st.sampled_from(["x rank", "x dtype", "kernel channels", "bias", "window"]))
def test_conv_names_the_broken_array(call, which):
    x, kernel, kwargs = call
    bias = None
    if which == "x rank":
        x, argument = x[0, ..., 0], "x"  # spatial dims only: no channel axis
    elif which == "x dtype":
        x, argument = x.astype(jnp.int32), "x"
    elif which == "kernel channels":
        kernel, argument = jnp.ones((*kernel.shape[:-2], kernel.shape[-2] + 1, kernel.shape[-1])), "kernel"
    elif which == "bias":
        bias, argument = jnp.ones(kernel.shape[-1] + 1), "bias"
    else:  # a window larger than the input
        kernel, argument = jnp.ones((*(s + 1 for s in x.shape[1:-1]), *kernel.shape[-2:])), "window"
    _raises_naming(lambda: functional.conv(x, kernel, bias, **kwargs), argument)


POOLS = {
    "max_pool": functional.max_pool,
    "avg_pool": functional.avg_pool,
}


@SETTINGS
@given(
    pool=st.sampled_from(sorted(POOLS)),
    ndim=st.integers(1, 3),
    window=st.integers(2, 4),
    misuse=st.sampled_from(["window zero", "window too large", "padding over half", "stride", "padding"]),
)
def test_pooling_names_the_broken_argument(pool, ndim, window, misuse):
    x = jnp.ones((1, *(window + 2,) * ndim, 2))
    kwargs = {"window": window, "stride": None, "padding": "VALID"}
    POOLS[pool](x, **kwargs)
    if misuse == "window zero":
        kwargs["window"], argument = 0, "window"
    elif misuse == "window too large":
        kwargs["window"], argument = window + 3, "window"
    elif misuse == "padding over half":
        kwargs["padding"], argument = window // 2 + 1, "padding"
    elif misuse == "stride":
        kwargs["stride"], argument = 0, "stride"
    else:
        kwargs["padding"], argument = "REFLECT", "padding"
    _raises_naming(lambda: POOLS[pool](x, **kwargs), argument)


@SETTINGS
@given(ndim=st.integers(1, 3), bad=st.one_of(st.integers(-2, 0), st.just((2, 2, 2, 2))))
def test_adaptive_pooling_names_output_size(ndim, bad):
    x = jnp.ones((1, *(6,) * ndim, 2))
    for pool in (functional.adaptive_avg_pool, functional.adaptive_max_pool):
        _raises_naming(lambda pool=pool: pool(x, bad), "output_size")


@SETTINGS
@given(
    size=st.integers(1, 9),
    window=st.integers(1, 4),
    stride=st.integers(0, 3),
    padding=st.integers(0, 3),
    output_padding=st.integers(0, 3),
)
def test_conv_transpose_output_size_names_what_is_wrong(size, window, stride, padding, output_padding):
    call = lambda: functional.conv_transpose_output_size(size, window, stride, padding, output_padding)
    out = (size - 1) * stride - 2 * padding + (window - 1) + output_padding + 1
    if stride < 1:
        _raises_naming(call, "stride")
    elif output_padding >= stride:
        _raises_naming(call, "output_padding")
    elif out < 1:
        _raises_naming(call, "no output")
    else:
        assert call() == out


@SETTINGS
@given(
    size=st.integers(1, 30), window=st.integers(1, 8), stride=st.integers(-2, 3), padding=st.integers(-2, 3)
)
def test_conv_output_size_names_what_is_wrong(size, window, stride, padding):
    if stride < 1:
        _raises_naming(lambda: functional.conv_output_size(size, window, stride, padding), "stride")
    elif padding < 0:
        _raises_naming(lambda: functional.conv_output_size(size, window, stride, padding), "padding")
    elif size + 2 * padding < window:
        _raises_naming(lambda: functional.conv_output_size(size, window, stride, padding), "window")
    else:
        assert (
            functional.conv_output_size(size, window, stride, padding)
            == (size + 2 * padding - window) // stride + 1
        )


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(["lenet5", "allconv", "vgg11"]), shrink=st.integers(1, 5))
def test_models_name_their_minimum_input(name, shrink):
    minimum = {"lenet5": 12, "allconv": 9, "vgg11": 32}[name]
    model = models.create(name)
    side = minimum - shrink
    _raises_naming(lambda: model.init(jax.random.key(0), jnp.ones((1, side, side, 3))), f"at least {minimum}")
    create_nnx = lambda: models.create_nnx(name, input_shape=(side, side, 3), rngs=nnx.Rngs(0))
    _raises_naming(lambda: nnx.eval_shape(create_nnx), f"at least {minimum}")


@SETTINGS
@given(name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12))
def test_unknown_model_and_dataset_names_list_the_valid_ones(name):
    if name not in models.available():
        _raises_naming(lambda: models.create(name), "available")
    if name not in data.available():
        _raises_naming(lambda: data.load(name), "unknown dataset name")


@SETTINGS
@given(kwarg=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10))
def test_unknown_model_arguments_are_named(kwarg):
    if kwarg not in models.arguments("lenet5") and kwarg not in ("num_classes", "rngs", "input_shape"):
        _raises_naming(lambda: models.create("lenet5", **{kwarg: 1}), kwarg)
        _raises_naming(lambda: models.create_nnx("lenet5", rngs=nnx.Rngs(0), **{kwarg: 1}), kwarg)


CONFIG_MISUSES = {
    "batch_size": st.one_of(st.integers(-5, 0), st.floats(1.5, 9.5), st.just("128")),
    "learning_rate": st.one_of(st.floats(-1.0, -1e-3), st.just("fast")),
    "parallel": st.sampled_from(["gpu", "DATA", "ddp"]),
    "optimizer": st.sampled_from(["lion", "SGD", ""]),
    "optim.momentum": st.floats(1.0, 5.0),
    "num_steps": st.integers(-10, -1),
    "loss.label_smoothing": st.floats(1.0, 2.0),
    "augment.crop_padding": st.integers(-3, -1),
    "augment.erase_probability": st.floats(1.01, 3.0),
    "ema.decay": st.one_of(st.floats(1.0, 2.0), st.floats(-1.0, -0.01)),
}


@SETTINGS
@given(data_=st.data())
def test_config_values_are_named(data_):
    config = default_config().unlock()
    key = data_.draw(st.sampled_from(sorted(CONFIG_MISUSES)))
    value = data_.draw(CONFIG_MISUSES[key])
    section, _, field = key.rpartition(".")
    try:
        (config[section] if section else config)[field] = value
    except TypeError as error:  # ConfigDict is type-safe: a value of another type is refused at once
        assert field in str(error)
        return
    _raises_naming(lambda: validate_config(config), f"config.{key}")


@SETTINGS
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12))
def test_unknown_config_keys_are_named(key):
    config = default_config()
    if key in config:
        return
    with pytest.raises((AttributeError, KeyError), match=key):  # the locked dict refuses a typo at once
        config[key] = 1
    unlocked = default_config().unlock()
    unlocked[key] = 1
    _raises_naming(lambda: validate_config(unlocked), key)


@SETTINGS
@given(features=st.integers(-3, 0), kernel=st.integers(-2, 0))
def test_layers_name_their_arguments(features, kernel):
    x = jnp.ones((1, 8, 8, 2))
    _raises_naming(lambda: layers.Conv(features, 3).init(jax.random.key(0), x), "features")
    _raises_naming(lambda: layers.Conv(4, kernel).init(jax.random.key(0), x), "kernel_size")
    _raises_naming(lambda: layers.Dense(features).init(jax.random.key(0), x), "features")
    rngs = nnx.Rngs(0)
    _raises_naming(lambda: nnx_layers.Conv(2, features, 3, rngs=rngs), "out_features")
    _raises_naming(lambda: nnx_layers.Conv(features, 4, 3, rngs=rngs), "in_features")
    _raises_naming(lambda: nnx_layers.Conv(2, 4, kernel, rngs=rngs), "kernel_size")
    _raises_naming(lambda: nnx_layers.Dense(2, features, rngs=rngs), "out_features")
    _raises_naming(lambda: nnx_layers.BatchNorm(features, rngs=rngs), "num_features")


@SETTINGS
@given(
    layer=st.sampled_from(["conv", "dense", "batch_norm", "dropout"]),
    value=st.one_of(st.floats(allow_nan=True), st.text(max_size=3), st.none(), st.booleans()),
)
def test_nnx_layers_name_a_wrong_kind_of_value(layer, value):
    """A value of the wrong kind (a float for a size, NaN for a rate, ...) is named at construction."""
    make, argument, valid = {
        "conv": (lambda v: nnx_layers.Conv(2, v, 3, rngs=nnx.Rngs(0)), "out_features", lambda v: False),
        "dense": (lambda v: nnx_layers.Dense(v, 3, rngs=nnx.Rngs(0)), "in_features", lambda v: False),
        "batch_norm": (
            lambda v: nnx_layers.BatchNorm(3, momentum=v, rngs=nnx.Rngs(0)),
            "momentum",
            lambda v: 0 <= v <= 1,
        ),
        "dropout": (lambda v: nnx_layers.Dropout(v), "rate", lambda v: 0 <= v < 1),
    }[layer]
    if isinstance(value, float) and valid(value):
        make(value)
    else:
        _raises_naming(lambda: make(value), argument)
