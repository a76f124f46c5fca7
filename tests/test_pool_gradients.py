"""Max and min pooling's values and gradients against PyTorch's autograd (issue 36, items 10-11).

PyTorch's rule: each window (adaptive bin) passes its gradient to its first extreme cell in scan order
(row-major), so tied cells, common after a ReLU, do not share it. Checked on tied inputs (zeros, ReLU
outputs, a few repeated levels) and random ones, with a random cotangent so that every window's share
shows, for dilated max/min pools (where JAX has no derivative of its own) on every `impl`, for the
undilated ones, for adaptive and global max pools, and through both module APIs. Min pools are checked
against PyTorch's `-max_pool(-x)`.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as R
from test_functional import _flat_pad, _from_torch, _to_torch

from jaxcnn import functional as F
from jaxcnn import layers
from jaxcnn import nnx_layers as L

torch = pytest.importorskip("torch")
TF = torch.nn.functional
INPUTS = ("zeros", "relu", "levels", "random")


def _input(kind: str, shape, seed: int = 0) -> np.ndarray:
    """float32 `shape`: all zeros, a ReLU's output (about half zeros), values from {0, 1, 2}, or normal."""
    rng = np.random.default_rng(seed)
    return {
        "zeros": lambda: np.zeros(shape),
        "relu": lambda: np.maximum(rng.standard_normal(shape), 0),
        "levels": lambda: rng.integers(0, 3, shape),
        "random": lambda: rng.standard_normal(shape),
    }[kind]().astype(np.float32)


def _cotangent(shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_value_and_grad(fn, x: np.ndarray, cotangent_seed: int = 1):
    """`(fn(x), x's gradient of <fn(x), cotangent>)` by PyTorch, channels-last in and out; `fn` takes and
    returns channels-first float64 tensors."""
    xt = _to_torch(torch, x).requires_grad_()
    y = _from_torch(yt := fn(xt))
    cotangent = _cotangent(y.shape, cotangent_seed)
    yt.backward(_to_torch(torch, cotangent))
    return y, _from_torch(xt.grad), cotangent


def check_against_torch(fn, torch_fn, shape, seed: int = 0):
    """On each kind of input (`INPUTS`) of `shape`, `fn`'s value and gradient (JAX, float32) equal
    `torch_fn`'s (PyTorch, float64). One program for the inputs (eagerly, each ran op by op)."""

    @jax.jit
    def value_and_grad(x, cotangent):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(cotangent)[0]

    for inputs in INPUTS:
        x = _input(inputs, shape, seed)
        expected, expected_grad, cotangent = torch_value_and_grad(torch_fn, x)
        y, grad = value_and_grad(jnp.asarray(x), jnp.asarray(cotangent))
        np.testing.assert_allclose(y, expected, rtol=1e-6, err_msg=f"value, {inputs} input")
        np.testing.assert_allclose(
            grad, expected_grad, rtol=1e-5, atol=1e-6, err_msg=f"gradient, {inputs} input"
        )


def torch_pool(kind: str, x_shape, window, stride, padding, dilation, ceil_mode):
    """PyTorch's max (or, as `-max_pool(-x)`, min) pool of a channels-first tensor with jaxcnn's
    arguments: symmetric padding is PyTorch's own, asymmetric padding pads with -inf first."""
    nd = len(x_shape) - 2
    window, dilation = R.as_tuple(window, nd), R.as_tuple(dilation, nd)
    stride = window if stride is None else R.as_tuple(stride, nd)
    pairs = R.resolve_padding_ref(padding, x_shape[1:-1], window, stride, dilation)
    pool = getattr(TF, f"max_pool{nd}d")
    sign = 1 if kind == "max" else -1

    def fn(xt):
        xt = sign * xt
        if all(lo == hi for lo, hi in pairs):
            pads = tuple(lo for lo, _ in pairs)
        else:
            assert not ceil_mode, "PyTorch's ceil_mode rule counts the padding it adds, not -inf pads"
            xt, pads = TF.pad(xt, _flat_pad(pairs), value=-math.inf), 0
        return sign * pool(xt, window, stride, pads, dilation, ceil_mode=ceil_mode)

    return fn


# (x shape, window, stride, padding, dilation, ceil_mode): 1-, 2- and 3-d, strided, padded (symmetric and
# not), overlapping and not, ceil_mode.
DILATED = [
    ((1, 4, 4, 1), 2, 1, 0, 2, False),  # the issue's example
    ((2, 9, 3), 3, 2, 1, 2, True),
    ((2, 8, 2), 2, 1, "VALID", 3, False),
    ((2, 7, 6, 2), (3, 2), (2, 1), 1, (2, 3), True),
    ((1, 6, 7, 2), 2, 2, ((1, 0), (0, 1)), 2, False),
    ((1, 5, 4, 5, 2), 2, 1, 1, (2, 1, 2), False),
]
UNDILATED = [
    ((2, 6, 8, 2), 2, None, "VALID", 1, False),  # reshape's geometry
    ((2, 7, 7, 2), 3, 2, 1, 1, False),  # ResNet's
    ((2, 7, 6, 2), 3, 2, 1, 1, True),
    ((2, 9, 3), 2, 1, "SAME", 1, False),
    ((1, 4, 6, 5, 2), 2, None, "VALID", 1, False),
]


CASE_IDS = [
    "issue", "1d-ceil", "1d-valid", "2d-ceil", "2d-asymmetric", "3d",
    "2d-reshape", "2d-resnet", "2d-resnet-ceil", "1d-same", "3d-reshape",
]  # fmt: skip


def _pool_case(case):
    shape, window, stride, padding, dilation, ceil_mode = case
    return shape, dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)


def _jaxcnn_pools(kind: str, window, kw) -> list:
    """jaxcnn's max pool on every `impl` and `pool(x, lax.max, -inf, ...)`, or its min pool and
    `pool(x, lax.min, inf, ...)`, with `torch_pool`'s arguments `kw`, as functions of `x`."""
    args = (window, kw["stride"], kw["padding"])
    options = dict(dilation=kw["dilation"], ceil_mode=kw["ceil_mode"])
    pools = [partial(F.max_pool, impl=impl) for impl in F.MAX_POOL_IMPLS] if kind == "max" else [F.min_pool]

    def generic(x, *args, **options):  # with the reducer's identity for x's dtype
        if jnp.issubdtype(x.dtype, jnp.floating):
            identity = -np.inf if kind == "max" else np.inf
        else:
            identity = getattr(jnp.iinfo(x.dtype), "min" if kind == "max" else "max")
        return F.pool(x, getattr(jax.lax, kind), identity, *args, **options)

    return [lambda x, pool=pool: pool(x, *args, **options) for pool in (*pools, generic)]


@pytest.mark.parametrize("case", DILATED + UNDILATED, ids=CASE_IDS)
@pytest.mark.parametrize("kind", ["max", "min"])
def test_pool_gradients_match_torch(case, kind):
    shape, kw = _pool_case(case)
    expected = torch_pool(kind, shape, case[1], **kw)
    for pool in _jaxcnn_pools(kind, case[1], kw):
        check_against_torch(pool, expected, shape, seed=len(shape))


@pytest.mark.parametrize("dtype", [jnp.int32, jnp.int8, jnp.uint8])
@pytest.mark.parametrize("case", DILATED[1:4], ids=CASE_IDS[1:4])
def test_dilated_pools_of_integers_match_torch_values(dtype, case):
    shape, kw = _pool_case(case)
    x = _input("levels", shape) * 40 + 7
    for kind in ("max", "min"):
        expected, _, _ = torch_value_and_grad(torch_pool(kind, shape, case[1], **kw), x)
        for pool in _jaxcnn_pools(kind, case[1], kw):
            y = pool(jnp.asarray(x, dtype))
            assert y.dtype == dtype
            np.testing.assert_array_equal(y, expected)


def test_adaptive_and_global_max_pools_of_integers_match_torch_values():
    x = _input("levels", (2, 5, 7, 3)) * 40 + 7
    expected, _, _ = torch_value_and_grad(lambda xt: TF.adaptive_max_pool2d(xt, (3, 4)), x)
    for dtype in (jnp.int32, jnp.uint8):
        y = F.adaptive_max_pool(jnp.asarray(x, dtype), (3, 4))
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(F.global_max_pool(jnp.asarray(x, dtype)), x.max((1, 2)))


@pytest.mark.parametrize(
    "pool, torch_fn",
    [
        (
            lambda x: F.max_pool(x, (3, 2), 1, 1, dilation=2, ceil_mode=True),
            torch_pool("max", (3, 7, 6, 2), (3, 2), 1, 1, 2, True),
        ),
        (
            lambda x: F.min_pool(x, (2, 3), dilation=(2, 1)),
            torch_pool("min", (3, 7, 6, 2), (2, 3), None, 0, (2, 1), False),
        ),
        (lambda x: F.adaptive_max_pool(x, (3, 4)), lambda xt: TF.adaptive_max_pool2d(xt, (3, 4))),
        (lambda x: F.global_max_pool(x, spatial_dims=2), lambda xt: TF.adaptive_max_pool2d(xt, 1).flatten(1)),
    ],
    ids=["max_pool", "min_pool", "adaptive_max_pool", "global_max_pool"],
)
def test_pool_gradients_under_jit_vmap_and_jvp(pool, torch_fn):
    """`jit(vmap(grad))` over unbatched examples equals PyTorch's gradient, and forward mode agrees with
    reverse mode: `<jvp(t), c> = <t, vjp(c)>`."""
    x = jnp.asarray(_input("levels", (3, 7, 6, 2)))
    per_example = jax.jit(jax.vmap(jax.grad(lambda x: (pool(x) ** 2).sum())))(x)
    xt = _to_torch(torch, x).requires_grad_()
    (torch_fn(xt) ** 2).sum().backward()
    np.testing.assert_allclose(per_example, _from_torch(xt.grad), rtol=1e-6)
    tangent = jnp.asarray(_cotangent(x.shape, seed=2))
    y, forward = jax.jit(lambda x, t: jax.jvp(jax.vmap(pool), (x,), (t,)))(x, tangent)
    cotangent = jnp.asarray(_cotangent(y.shape, seed=3))
    (backward,) = jax.vjp(jax.vmap(pool), x)[1](cotangent)
    np.testing.assert_allclose(jnp.vdot(forward, cotangent), jnp.vdot(tangent, backward), rtol=1e-5)


# (input spatial sizes, output size): dividing (the reshape) and not (overlapping bins), output larger
# than the input, 1-, 2- and 3-d.
ADAPTIVE = [((5,), 3), ((6, 6), (3, 2)), ((5, 7), (3, 4)), ((3, 4), (5, 7)), ((4, 5, 3), (3, 2, 2))]


@pytest.mark.parametrize("sizes, output_size", ADAPTIVE)
def test_adaptive_max_pool_gradient_matches_torch(sizes, output_size):
    nd = len(sizes)
    expected = lambda xt: getattr(TF, f"adaptive_max_pool{nd}d")(xt, R.as_tuple(output_size, nd))
    check_against_torch(lambda x: F.adaptive_max_pool(x, output_size), expected, (2, *sizes, 3), seed=nd)


def test_adaptive_max_pool_gradient_of_the_issue():
    grad = jax.grad(lambda v: F.adaptive_max_pool(v, 3).sum())(jnp.zeros((1, 5, 1)))
    np.testing.assert_array_equal(grad[0, :, 0], [1, 1, 0, 1, 0])


@pytest.mark.parametrize("sizes", [(5,), (3, 4), (2, 3, 2)])
def test_global_max_pool_gradient_matches_torch(sizes):
    """As PyTorch's global max pool, `adaptive_max_pool(x, 1)`; keepdims keeps the same gradient."""
    nd, shape = len(sizes), (2, *sizes, 3)
    pool = getattr(TF, f"adaptive_max_pool{nd}d")
    check_against_torch(lambda x: F.global_max_pool(x, keepdims=True), lambda xt: pool(xt, 1), shape, seed=nd)
    check_against_torch(F.global_max_pool, lambda xt: pool(xt, 1).flatten(1), shape, seed=nd)


@pytest.mark.parametrize(
    "make, torch_fn",
    [
        (
            lambda api: api.MaxPool(3, 2, 1, dilation=(2, 1), ceil_mode=True),
            torch_pool("max", (2, 7, 6, 2), 3, 2, 1, (2, 1), True),
        ),
        (
            lambda api: api.MinPool((2, 3), 1, dilation=2),
            torch_pool("min", (2, 7, 6, 2), (2, 3), 1, 0, 2, False),
        ),
        (lambda api: api.AdaptiveMaxPool((3, 4)), lambda xt: TF.adaptive_max_pool2d(xt, (3, 4))),
        (lambda api: api.GlobalMaxPool(), lambda xt: TF.adaptive_max_pool2d(xt, 1).flatten(1)),
    ],
    ids=["MaxPool", "MinPool", "AdaptiveMaxPool", "GlobalMaxPool"],
)
def test_pool_layers_gradients_match_torch(make, torch_fn):
    """Through both module APIs: `jaxcnn.nnx_layers` and `jaxcnn.layers`."""
    check_against_torch(make(L), torch_fn, (2, 7, 6, 2))
    check_against_torch(lambda x: make(layers).apply({}, x), torch_fn, (2, 7, 6, 2))
