"""Issue 21's functional ops against PyTorch (values and gradients), numpy loops and their own transposes:
transposed convolution, padding modes, ceil-mode and dilated pooling, generic/min/integer pooling,
`keepdims`, any batch shape, mixed padding specs and the locally connected convolution.

Shapes are tiny and the configurations few but random (seeded), so the file costs seconds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.test_util import check_grads
from test_functional import assert_close as assert_close_to

from jaxcnn import functional as F


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def assert_close(actual, expected):
    assert_close_to(actual, expected, rtol=2e-5)


def to_torch(torch, x, grad=False):
    """NHWC numpy -> NCHW float64 torch tensor."""
    t = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float64), -1, 1)))
    return t.requires_grad_(grad)


def from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def torch_weight(torch, k, grad=False):
    """jaxcnn's `(*window, A, B)` -> PyTorch's `(B, A, *window)` (conv: OIHW; conv_transpose: its
    `(C_in, C_out // groups, *window)`, the same permutation)."""
    nd = np.ndim(k) - 2
    t = torch.from_numpy(
        np.ascontiguousarray(np.transpose(np.asarray(k, np.float64), (nd + 1, nd, *range(nd))))
    )
    return t.requires_grad_(grad)


def torch_vjp(torch, fn, inputs, cotangent):
    """`(fn(*inputs), grads of <fn(*inputs), cotangent> wrt each input)` in PyTorch."""
    out = fn(*inputs)
    (out * to_torch(torch, cotangent)).sum().backward()
    return from_torch(out), [t.grad for t in inputs]


def jax_vjp(fn, inputs, cotangent):
    out, vjp = jax.vjp(fn, *inputs)
    return out, vjp(jnp.asarray(cotangent, out.dtype))


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------------------------- transposed convolution


def _transpose_configs():
    rng = np.random.default_rng(21)
    for nd in (1, 2, 3, 2, 1, 2):
        groups = int(rng.choice([1, 2]))
        stride = tuple(int(s) for s in rng.integers(1, 4, nd))
        dilation = tuple(int(d) for d in rng.integers(1, 3, nd))
        window = tuple(int(f) for f in rng.integers(1, 4, nd))
        padding = tuple(int(rng.integers(0, (d * (f - 1)) // 2 + 1)) for f, d in zip(window, dilation))
        output_padding = tuple(int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation))
        sizes = tuple(int(n) for n in rng.integers(2, 5 if nd < 3 else 3, nd))
        yield nd, groups, stride, dilation, window, padding, output_padding, sizes


@pytest.mark.parametrize("config", list(_transpose_configs()), ids=lambda c: f"{c[0]}d")
def test_conv_transpose_matches_torch_values_and_grads(torch, config):
    nd, groups, stride, dilation, window, padding, output_padding, sizes = config
    rng = np.random.default_rng(hash(config) % 2**32)
    c_in, c_out = 2 * groups, 3 * groups
    x, k, b = f32(rng, 2, *sizes, c_in), f32(rng, *window, c_out // groups, c_in), f32(rng, c_out)
    kwargs = dict(
        stride=stride, padding=padding, output_padding=output_padding, dilation=dilation, groups=groups
    )
    cotangent = f32(rng, *jax.eval_shape(lambda: F.conv_transpose(x, k, b, **kwargs)).shape)
    out, (dx, dk, db) = jax_vjp(lambda x, k, b: F.conv_transpose(x, k, b, **kwargs), (x, k, b), cotangent)

    fn = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    inputs = (
        to_torch(torch, x, True),
        torch_weight(torch, k, True),
        torch.tensor(b, dtype=torch.float64).requires_grad_(),
    )
    expected, (tdx, tdk, tdb) = torch_vjp(torch, lambda x, k, b: fn(x, k, b, **kwargs), inputs, cotangent)
    assert_close(out, expected)
    assert out.shape[1:-1] == tuple(
        F.conv_transpose_output_size(n, f, s, p, o, d)
        for n, f, s, p, o, d in zip(sizes, window, stride, padding, output_padding, dilation)
    )
    assert_close(dx, from_torch(tdx))
    assert_close(dk, np.transpose(tdk.numpy(), (*range(2, nd + 2), 1, 0)))
    assert_close(db, tdb.numpy())


@pytest.mark.parametrize("padding", [1, "SAME", "VALID", ((0, 2), (1, 0))])
@pytest.mark.parametrize("padding_mode", ["zeros", "circular", "reflect", "replicate"])
def test_conv_transpose_is_the_transpose_of_conv_both_ways(padding, padding_mode):
    """conv_transpose = linear_transpose(conv) on conv's input; conv = linear_transpose(conv_transpose)."""
    rng = np.random.default_rng(3)
    k = f32(rng, 3, 2, 4, 2)  # conv: 4 -> 2 channels; conv_transpose: 2 -> 4
    x = f32(rng, 2, 7, 6, 4)
    kwargs = dict(stride=2, padding=padding, padding_mode=padding_mode)
    if isinstance(padding, str) and padding_mode != "zeros":
        pytest.skip("Flax's strings pad with zeros")
    y = F.conv(x, k, **kwargs)
    # The transposed convolution from y's size back to x's: output_padding picks x's size among those.
    sizes = [
        F.conv_transpose_output_size(n, f, 2, p if isinstance(padding, str) else p)
        for n, f, p in zip(y.shape[1:3], k.shape[:2], _per_dim(padding))
    ]
    output_padding = tuple(want - got for want, got in zip(x.shape[1:3], sizes))
    if isinstance(padding, str) and any(output_padding):
        pytest.skip(f"{padding!r} fixes the output size")
    t_kwargs = dict(kwargs, output_padding=0 if isinstance(padding, str) else output_padding)
    g = f32(rng, *y.shape)
    (expected,) = jax.linear_transpose(lambda x: F.conv(x, k, **kwargs), x)(g)
    assert_close(F.conv_transpose(g, k, **t_kwargs), expected)
    (back,) = jax.linear_transpose(lambda g: F.conv_transpose(g, k, **t_kwargs), g)(x)
    assert_close(back, y)


def _per_dim(padding):
    if isinstance(padding, (str, int)):
        return (padding, padding)
    return padding


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_conv_transpose_flax_strings_match_lax_conv_transpose(padding):
    rng = np.random.default_rng(4)
    x, k = f32(rng, 2, 5, 4, 3), f32(rng, 3, 2, 2, 3)
    expected = lax.conv_transpose(
        x, k, (2, 3), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"), transpose_kernel=True
    )
    assert_close(F.conv_transpose(x, k, stride=(2, 3), padding=padding), expected)


@pytest.mark.parametrize(
    "size, window, stride, padding, output_padding, dilation, expected",
    [(4, 3, 2, 1, 1, 1, 8), (5, 3, 1, 0, 0, 2, 9), (3, 4, 3, (1, 2), 2, 1, 9), (3, 3, 2, "SAME", 0, 1, 6)],
)
def test_conv_transpose_output_size(size, window, stride, padding, output_padding, dilation, expected):
    # W2 = (W1 - 1)*S - P_lo - P_hi + D*(F - 1) + output_padding + 1, by hand
    assert F.conv_transpose_output_size(size, window, stride, padding, output_padding, dilation) == expected


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: F.conv_transpose_output_size(1, 1, 1, 1), "no output"),
        (lambda: F.conv_transpose_output_size(3, 3, 2, 0, 2), "output_padding"),
        (
            lambda: F.conv_transpose(np.zeros((1, 4, 2), np.float32), np.zeros((3, 3, 3), np.float32)),
            "kernel",
        ),
        (
            lambda: F.conv_transpose(
                np.zeros((1, 4, 2), np.float32), np.zeros((3, 3, 2)), padding="SAME", output_padding=1
            ),
            "output_padding",
        ),
        (
            lambda: F.conv_transpose(np.zeros((1, 4, 2), np.float32), np.zeros((3, 3, 2)), padding="FULL"),
            "padding",
        ),
        (
            lambda: F.conv_transpose(np.zeros((1, 4, 2), np.float32), np.zeros((3, 3, 2)), bias=np.zeros(2)),
            "bias",
        ),
    ],
)
def test_conv_transpose_errors(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


# ----------------------------------------------------------------------------------------- padding modes


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_modes_match_torch_values_and_grads(torch, mode, nd):
    rng = np.random.default_rng(nd)
    sizes = (5, 4, 3)[:nd]
    x, k, b = f32(rng, 2, *sizes, 2), f32(rng, *(2, 3, 2)[:nd], 2, 3), f32(rng, 3)
    padding = (2, 1, 1)[:nd]
    kwargs = dict(stride=(1, 2, 1)[:nd], padding=padding, padding_mode=mode)
    cotangent = f32(rng, *jax.eval_shape(lambda: F.conv(x, k, b, **kwargs)).shape)
    out, (dx, dk) = jax_vjp(lambda x, k: F.conv(x, k, b, **kwargs), (x, k), cotangent)

    layer = getattr(torch.nn, f"Conv{nd}d")(2, 3, k.shape[:nd], stride=kwargs["stride"], padding=padding,
                                            padding_mode=mode).double()  # fmt: skip
    with torch.no_grad():
        layer.weight.copy_(torch_weight(torch, k))
        layer.bias.copy_(torch.tensor(b, dtype=torch.float64))
    xt = to_torch(torch, x, True)
    expected = layer(xt)
    (expected * to_torch(torch, cotangent)).sum().backward()
    assert_close(out, from_torch(expected))
    assert_close(dx, from_torch(xt.grad))
    assert_close(dk, np.transpose(layer.weight.grad.numpy(), (*range(2, nd + 2), 1, 0)))


def test_causal_padding_is_left_padding_by_the_dilated_window():
    rng = np.random.default_rng(5)
    x, k = f32(rng, 2, 7, 3), f32(rng, 3, 3, 4)
    padded = np.pad(x, ((0, 0), (4, 0), (0, 0)))  # D*(F - 1) = 2*2 cells before, none after
    expected = F.conv(padded, k, dilation=2)
    assert_close(F.conv(x, k, padding="CAUSAL", dilation=2), expected)
    with pytest.raises(ValueError, match="CAUSAL"):
        F.conv(np.zeros((1, 4, 4, 1), np.float32), np.zeros((2, 2, 1, 1), np.float32), padding="CAUSAL")


def test_flax_circular_padding_matches_flax():
    import flax.linen as nn

    rng = np.random.default_rng(6)
    x = f32(rng, 2, 5, 6, 3)
    layer = nn.Conv(4, (3, 2), padding="CIRCULAR", use_bias=False)
    variables = layer.init(jax.random.key(0), x)
    expected = layer.apply(variables, x)
    assert_close(F.conv(x, variables["params"]["kernel"], padding="CIRCULAR"), expected)


def test_padding_mode_errors():
    x, k = np.zeros((1, 3, 3, 1), np.float32), np.zeros((2, 2, 1, 1), np.float32)
    with pytest.raises(ValueError, match="padding_mode"):
        F.conv(x, k, padding=1, padding_mode="mirror")
    with pytest.raises(ValueError, match="smaller than the input size"):
        F.conv(x, k, padding=3, padding_mode="reflect")
    with pytest.raises(ValueError, match="CIRCULAR"):
        F.conv(x, k, padding="CIRCULAR", padding_mode="reflect")


# --------------------------------------------------------------------------------------------- pooling


def _pool_configs():
    rng = np.random.default_rng(7)
    for nd in (1, 2, 3, 2, 2):
        window = tuple(int(f) for f in rng.integers(2, 4, nd))
        stride = tuple(int(s) for s in rng.integers(1, 4, nd))
        padding = tuple(int(rng.integers(0, f // 2 + 1)) for f in window)
        sizes = tuple(int(n) for n in rng.integers(4, 8 if nd < 3 else 6, nd))
        yield nd, window, stride, padding, sizes


@pytest.mark.parametrize("config", list(_pool_configs()), ids=lambda c: f"{c[0]}d")
def test_ceil_mode_and_dilated_pooling_match_torch(torch, config):
    nd, window, stride, padding, sizes = config
    rng = np.random.default_rng(sum(sizes))
    x = f32(rng, 2, *sizes, 2)
    xt = to_torch(torch, x)
    tf = torch.nn.functional
    dilation = tuple(1 + (i % 2) for i in range(nd))
    if all(n + 2 * p >= d * (f - 1) + 1 for n, p, d, f in zip(sizes, padding, dilation, window)):
        expected = getattr(tf, f"max_pool{nd}d")(xt, window, stride, padding, dilation, ceil_mode=True)
        got = F.max_pool(x, window, stride, padding, dilation=dilation, ceil_mode=True)
        assert_close(got, from_torch(expected))
        assert got.shape[1:-1] == tuple(
            F.conv_output_size(n, f, s, p, d, ceil_mode=True)
            for n, f, s, p, d in zip(sizes, window, stride, padding, dilation)
        )
    for include in (True, False):
        expected = getattr(tf, f"avg_pool{nd}d")(
            xt, window, stride, padding, ceil_mode=True, count_include_pad=include
        )
        got = F.avg_pool(x, window, stride, padding, include, ceil_mode=True)
        assert_close(got, from_torch(expected))


def test_ceil_mode_last_window_rule():
    # W=5, F=2, S=2, P=1: ceil((5 + 2 - 2)/2) + 1 = 4 windows, but the 4th would start at 6 >= W + P_lo = 6
    assert F.conv_output_size(5, 2, 2, 1, ceil_mode=True) == 3
    assert F.conv_output_size(6, 3, 2, 0, ceil_mode=True) == 3  # the last window runs 1 past the input


def test_min_generic_and_integer_pooling():
    rng = np.random.default_rng(8)
    x = f32(rng, 2, 5, 6, 3)
    assert_close(F.min_pool(x, 2, 1, 1), -F.max_pool(-x, 2, 1, 1))
    assert_close(F.pool(x, lax.add, 0.0, (2, 3)), F.avg_pool(x, (2, 3)) * 6)
    ints = rng.integers(-100, 100, (2, 5, 6, 3)).astype(np.int32)
    got = F.max_pool(ints, 2, 1, 1)
    assert got.dtype == jnp.int32
    padded = np.pad(ints, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=np.iinfo(np.int32).min)
    windows = [[padded[:, i : i + 2, j : j + 2].max((1, 2)) for j in range(7)] for i in range(6)]
    expected = np.array(windows).transpose(2, 0, 1, 3)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(F.min_pool(ints, 2, 1, 1), -F.max_pool(-ints, 2, 1, 1))
    with pytest.raises(TypeError, match="reducer"):
        F.pool(x, "max", 0.0, 2)
    with pytest.raises(ValueError, match="init"):
        F.pool(ints, lax.max, 0.5, 2)
    with pytest.raises(TypeError, match=r"\bx\b"):
        F.avg_pool(ints, 2)


def test_global_pool_keepdims():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(F.global_avg_pool(x, keepdims=True), x.mean((1, 2), keepdims=True), rtol=1e-6)
    np.testing.assert_array_equal(
        F.global_max_pool(x.astype(np.int32), keepdims=True), x.max((1, 2), keepdims=True)
    )


# ------------------------------------------------------------------------------------------ batch shapes


BATCHED_OPS = {
    "conv": (lambda x: F.conv(x, np.ones((2, 3, 3, 2), np.float32), padding=[1, (0, 2)]), 2),
    "conv_transpose": (lambda x: F.conv_transpose(x, np.ones((2, 3, 2, 3), np.float32), stride=2), 2),
    "conv_local": (lambda x: F.conv_local(x, np.ones((4, 4, 12, 2), np.float32), window=2), 2),
    "max_pool": (lambda x: F.max_pool(x, (2, 2), ceil_mode=True), 2),
    "avg_pool": (lambda x: F.avg_pool(x, (3, 2), 1, 1), 2),
    "adaptive_avg_pool": (lambda x: F.adaptive_avg_pool(x, (2, 3)), 2),
    "global_max_pool": (lambda x: F.global_max_pool(x, spatial_dims=2), 2),
    "extract_patches": (lambda x: F.extract_patches(x, (2, 2)), 2),
}


@pytest.mark.parametrize("name", list(BATCHED_OPS))
def test_any_batch_shape(name):
    """Unbatched and several leading dims give what one batch dim gives, leading shape restored."""
    op, _ = BATCHED_OPS[name]
    x = np.random.default_rng(9).standard_normal((6, 5, 5, 3)).astype(np.float32)
    batched = op(x)
    np.testing.assert_allclose(op(x[0]), batched[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        op(x.reshape(2, 3, 5, 5, 3)), batched.reshape(2, 3, *batched.shape[1:]), rtol=1e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        jax.vmap(op)(x.reshape(2, 3, 5, 5, 3)).reshape(batched.shape), batched, rtol=1e-6, atol=1e-6
    )


def test_mixed_padding_spec_is_flax_canonical():
    rng = np.random.default_rng(10)
    x, k = f32(rng, 1, 5, 5, 2), f32(rng, 3, 3, 2, 2)
    assert_close(F.conv(x, k, padding=[1, (2, 3)]), F.conv(x, k, padding=((1, 1), (2, 3))))
    assert F.conv_output_shape(x.shape, k.shape, padding=(1, (2, 3))) == (1, 5, 8, 2)


# --------------------------------------------------------------------------------- locally connected


def test_conv_local_matches_lax_and_a_loop():
    rng = np.random.default_rng(11)
    x = f32(rng, 2, 6, 5, 3)
    window, stride, padding = (3, 2), (2, 1), ((1, 0), (0, 1))
    shape = F.conv_local_kernel_shape(x.shape, window, 4, stride=stride, padding=padding)
    k, b = f32(rng, *shape), f32(rng, *shape[:2], 4)
    got = F.conv_local(x, k, b, window=window, stride=stride, padding=padding)
    expected = (
        lax.conv_general_dilated_local(
            x, k, stride, padding, window, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        + b
    )
    assert_close(got, expected)
    # a loop: output cell (i, j) has its own kernel, rows channel-major (c, window position)
    xp = np.pad(x, ((0, 0), (1, 0), (0, 1), (0, 0)))
    kk = k.reshape(*shape[:2], 3, math.prod(window), 4)
    loop = np.zeros(got.shape)
    for i in range(shape[0]):
        for j in range(shape[1]):
            patch = xp[:, 2 * i : 2 * i + 3, j : j + 2].reshape(2, 6, 3)  # (N, window, C)
            loop[:, i, j] = np.einsum("nwc,cwo->no", patch, kk[i, j]) + b[i, j]
    assert_close(got, loop)
    grads = jax.grad(lambda k: F.conv_local(x, k, window=window, stride=stride, padding=padding).sum())(k)
    assert grads.shape == k.shape
    with pytest.raises(ValueError, match="kernel"):
        F.conv_local(x, k[:-1], window=window, stride=stride, padding=padding)


def test_new_ops_jit_and_grad():
    rng = np.random.default_rng(12)
    x, k = f32(rng, 1, 4, 4, 2), f32(rng, 3, 3, 2, 2)
    op = jax.jit(
        lambda x, k: F.conv_transpose(x, k, stride=2, padding=1, output_padding=1, padding_mode="reflect")
    )
    check_grads(op, (x, k), order=1, modes=["rev"], atol=2e-2, rtol=2e-2)
    pool = jax.jit(lambda x: F.max_pool(x, 2, 2, 1, dilation=1, ceil_mode=True).sum())
    assert jax.grad(pool)(x).shape == x.shape
