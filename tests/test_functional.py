"""Oracle tests for ``jaxcnn.functional`` against the DESIGN.md contract.

The oracles are independent of the implementation: plain numpy loops (``tests/references.py``), SciPy and
PyTorch (``torch.nn.functional``, after the NCHW <-> NHWC / OIHW <-> HWIO transposition). The oracles are
themselves checked against PyTorch/SciPy by the tests marked ``references`` (they run even while
``jaxcnn.functional`` is missing).

Run:  .venv/bin/python -m pytest tests/test_functional.py -q
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import references as R
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

try:
    from jaxcnn import functional as F
except ImportError as err:  # not written yet: the reference checks still run
    F = None
    _IMPORT_ERROR = err

RTOL = 1e-5
PAD_FORMS = ("VALID", "SAME", "int", "ints", "pairs")
GROUP_FORMS = ("single", "depthwise", "multiplier", "grouped")


@pytest.fixture(autouse=True)
def _needs_implementation(request):
    if F is None and request.node.get_closest_marker("references") is None:
        pytest.fail(f"jaxcnn.functional is not importable: {_IMPORT_ERROR!r}")


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------------------------------------- helpers


def assert_close(actual, expected, rtol=RTOL):
    """Same shape, and equal to ``rtol`` relative to the magnitude of the expected output."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def flip_spatial(k):
    nd = k.ndim - 2
    return np.flip(np.asarray(k), axis=tuple(range(nd)))


def per_dim_padding(padding, i):
    """The one-dim padding spec ``conv_output_size`` takes for spatial dim ``i`` of an N-d spec."""
    if isinstance(padding, (str, int)):
        return padding
    return padding[i]


def _maybe_int(values, rng):
    """A per-dim tuple, sometimes collapsed to a single int when every entry is equal."""
    values = tuple(int(v) for v in values)
    if len(set(values)) == 1 and rng.random() < 0.5:
        return values[0]
    return values


def _padding(form, rng, nd, max_pad):
    if form in ("VALID", "SAME"):
        return form
    if form == "int":
        return int(rng.integers(0, max_pad + 1))
    if form == "ints":
        return tuple(int(p) for p in rng.integers(0, max_pad + 1, nd))
    pairs = [tuple(int(p) for p in rng.integers(0, max_pad + 1, 2)) for _ in range(nd)]
    if all(lo == hi for lo, hi in pairs) and max_pad > 0:  # make sure the pairs are asymmetric somewhere
        pairs[0] = (pairs[0][0], (pairs[0][0] + 1) % (max_pad + 1))
    return tuple(pairs)


def conv_config(seed):
    """A valid random conv config; seeds 0..59 cover every (rank, padding form, groups form)."""
    rng = np.random.default_rng(1000 + seed)
    nd = 1 + seed % 3
    pad_form = PAD_FORMS[(seed // 3) % 5]
    group_form = GROUP_FORMS[(seed // 15) % 4]
    if group_form == "single":
        groups, c_in, c_out = 1, int(rng.integers(1, 4)), int(rng.integers(1, 5))
    elif group_form == "depthwise":
        groups = c_in = c_out = int(rng.integers(2, 4))
    elif group_form == "multiplier":  # depthwise with a channel multiplier
        groups = c_in = int(rng.integers(1, 3))
        c_out = c_in * int(rng.integers(2, 4))
    else:
        groups, c_in, c_out = 2, 2 * int(rng.integers(1, 3)), 2 * int(rng.integers(1, 3))
    max_size = {1: 12, 2: 8, 3: 5}[nd]
    while True:
        sizes = tuple(int(s) for s in rng.integers(3, max_size + 1, nd))
        window = tuple(int(w) for w in rng.integers(1, 4, nd))
        stride = _maybe_int(rng.integers(1, 4, nd), rng)
        dilation = _maybe_int(rng.integers(1, 3, nd), rng)
        padding = _padding(pad_form, rng, nd, 2)
        pairs = R.resolve_padding_ref(padding, sizes, window, stride, dilation)
        s, d = R.as_tuple(stride, nd), R.as_tuple(dilation, nd)
        outs = [R.output_size_ref(sizes[i], window[i], s[i], pairs[i], d[i]) for i in range(nd)]
        if min(outs) >= 1:
            break
    x = f32(rng, 2, *sizes, c_in)
    k = f32(rng, *window, c_in // groups, c_out)
    b = f32(rng, c_out) if rng.random() < 0.5 else None
    return dict(
        x=x,
        k=k,
        b=b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        pairs=pairs,
        out_sizes=tuple(outs),
    )


def pool_config(seed):
    """A valid random pooling config; seeds 0..29 cover every (rank, padding form, count_include_pad)."""
    rng = np.random.default_rng(2000 + seed)
    nd = 1 + seed % 3
    pad_form = PAD_FORMS[(seed // 3) % 5]
    count_include_pad = bool((seed // 15) % 2)
    max_size = {1: 12, 2: 8, 3: 6}[nd]
    while True:
        sizes = tuple(int(s) for s in rng.integers(2, max_size + 1, nd))
        lo_w = 2 if pad_form in ("int", "ints", "pairs") else 1
        window = _maybe_int(rng.integers(lo_w, 4, nd), rng)
        w = R.as_tuple(window, nd)
        stride = None if rng.random() < 0.3 else _maybe_int(rng.integers(1, 4, nd), rng)
        padding = _padding(pad_form, rng, nd, min(w) // 2)
        pairs = R.resolve_padding_ref(padding, sizes, w, w if stride is None else stride, 1)
        if any(lo > f // 2 or hi > f // 2 for (lo, hi), f in zip(pairs, w, strict=True)):
            continue
        s = w if stride is None else R.as_tuple(stride, nd)
        outs = [R.output_size_ref(sizes[i], w[i], s[i], pairs[i]) for i in range(nd)]
        if min(outs) >= 1:
            break
    x = f32(rng, 2, *sizes, int(rng.integers(1, 4)))
    return dict(
        x=x, window=window, stride=stride, padding=padding, pairs=pairs, count_include_pad=count_include_pad
    )


CONV_SEEDS = range(60)
POOL_SEEDS = range(30)
# (input spatial sizes, output_size): identity, divisible, non-divisible, int and tuple forms
ADAPTIVE_CASES = [
    ((7,), 3),
    ((8,), (4,)),
    ((5,), 5),
    ((9,), 1),
    ((7, 5), (3, 2)),
    ((8, 6), 2),
    ((6, 6), (6, 6)),
    ((5, 7), (1, 1)),
    ((9, 4), (4, 3)),
    ((10, 7), 3),
    ((5, 4, 6), (2, 3, 4)),
    ((4, 4, 4), 2),
    ((3, 5, 4), (3, 5, 4)),
    ((5, 5, 3), (3, 2, 3)),
]


def adaptive_input(sizes, seed=0):
    rng = np.random.default_rng(3000 + seed)
    return f32(rng, 2, *sizes, 3)


# ---------------------------------------------------------------------------------------- torch oracles


def _to_torch(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(x, np.float64), -1, 1)))


def _from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _flat_pad(pairs):
    """torch.nn.functional.pad's order: last spatial dim first, (low, high) each."""
    return [p for pair in reversed(list(pairs)) for p in pair]


def torch_conv(torch, x, k, b, stride, pairs, dilation, groups):
    nd = np.ndim(x) - 2
    xt = torch.nn.functional.pad(_to_torch(torch, x), _flat_pad(pairs))
    kt = torch.from_numpy(
        np.ascontiguousarray(np.transpose(np.asarray(k, np.float64), (nd + 1, nd, *range(nd))))
    )
    bt = None if b is None else torch.from_numpy(np.asarray(b, np.float64))
    fn = getattr(torch.nn.functional, f"conv{nd}d")
    return _from_torch(
        fn(xt, kt, bt, stride=R.as_tuple(stride, nd), dilation=R.as_tuple(dilation, nd), groups=groups)
    )


def torch_max_pool(torch, x, window, stride, pairs):
    nd = np.ndim(x) - 2
    window = R.as_tuple(window, nd)
    stride = window if stride is None else R.as_tuple(stride, nd)
    fn = getattr(torch.nn.functional, f"max_pool{nd}d")
    if all(lo == hi for lo, hi in pairs):  # PyTorch's own padding
        return _from_torch(fn(_to_torch(torch, x), window, stride, padding=tuple(lo for lo, _ in pairs)))
    xt = torch.nn.functional.pad(_to_torch(torch, x), _flat_pad(pairs), value=-math.inf)
    return _from_torch(fn(xt, window, stride))


def torch_avg_pool(torch, x, window, stride, pairs, count_include_pad):
    nd = np.ndim(x) - 2
    window = R.as_tuple(window, nd)
    stride = window if stride is None else R.as_tuple(stride, nd)
    fn = getattr(torch.nn.functional, f"avg_pool{nd}d")
    if all(lo == hi for lo, hi in pairs):  # PyTorch's own padding
        return _from_torch(
            fn(
                _to_torch(torch, x),
                window,
                stride,
                padding=tuple(lo for lo, _ in pairs),
                count_include_pad=count_include_pad,
            )
        )
    xt = torch.nn.functional.pad(_to_torch(torch, x), _flat_pad(pairs))
    sums = fn(xt, window, stride)  # divides by prod(window): padded zeros counted
    if count_include_pad:
        return _from_torch(sums)
    ones = torch.nn.functional.pad(torch.ones_like(_to_torch(torch, x)[:, :1]), _flat_pad(pairs))
    return _from_torch(sums / fn(ones, window, stride))


def torch_adaptive(torch, kind, x, output_size):
    nd = np.ndim(x) - 2
    fn = getattr(torch.nn.functional, f"adaptive_{kind}_pool{nd}d")
    return _from_torch(fn(_to_torch(torch, x), R.as_tuple(output_size, nd)))


# ================================================================ oracle self-checks (marker: references)


@pytest.mark.references
@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_reference_matches_torch_conv(torch, seed):
    c = conv_config(seed)
    expected = torch_conv(torch, c["x"], c["k"], c["b"], c["stride"], c["pairs"], c["dilation"], c["groups"])
    got = R.conv_ref(c["x"], c["k"], c["b"], c["stride"], c["pairs"], c["dilation"], c["groups"])
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert got.shape[1:-1] == c["out_sizes"]


@pytest.mark.references
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("window, dilation", [((4,), 1), ((3, 2), (1, 2)), ((2, 3, 2), 1), ((5, 4), 2)])
def test_reference_same_matches_torch_same_at_stride_1(torch, window, dilation):
    """At stride 1 PyTorch's padding="same" also puts the odd cell on the high side."""
    rng = np.random.default_rng(7)
    nd = len(window)
    x, k = f32(rng, 2, *([7] * nd), 2), f32(rng, *window, 2, 3)
    pairs = R.resolve_padding_ref("SAME", x.shape[1:-1], window, 1, dilation)
    fn = getattr(torch.nn.functional, f"conv{nd}d")
    kt = torch.from_numpy(np.ascontiguousarray(np.transpose(k.astype(np.float64), (nd + 1, nd, *range(nd)))))
    expected = _from_torch(fn(_to_torch(torch, x), kt, padding="same", dilation=R.as_tuple(dilation, nd)))
    np.testing.assert_allclose(R.conv_ref(x, k, None, 1, pairs, dilation), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.references
@pytest.mark.parametrize(
    "shape, window", [((9,), (3,)), ((10,), (4,)), ((7, 6), (3, 2)), ((5, 4, 6), (2, 3, 3))]
)
def test_reference_matches_scipy(shape, window):
    rng = np.random.default_rng(11)
    x, k = f32(rng, 1, *shape, 1), f32(rng, *window, 1, 1)
    full = [(f - 1, f - 1) for f in window]
    for fn, ref in ((scipy.signal.correlate, R.conv_ref), (scipy.signal.convolve, R.convolve_ref)):
        for mode, pairs in (("valid", None), ("full", full)):
            expected = fn(
                x[0, ..., 0].astype(np.float64), k[..., 0, 0].astype(np.float64), mode=mode, method="direct"
            )
            np.testing.assert_allclose(
                ref(x, k, padding_pairs=pairs)[0, ..., 0], expected, rtol=1e-10, atol=1e-10
            )


@pytest.mark.references
@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_reference_matches_torch_pools(torch, seed):
    c = pool_config(seed)
    x, w, s, pairs = c["x"], c["window"], c["stride"], c["pairs"]
    np.testing.assert_allclose(
        R.max_pool_ref(x, w, s, pairs), torch_max_pool(torch, x, w, s, pairs), rtol=1e-12, atol=0
    )
    for cip in (True, False):
        np.testing.assert_allclose(
            R.avg_pool_ref(x, w, s, pairs, count_include_pad=cip),
            torch_avg_pool(torch, x, w, s, pairs, cip),
            rtol=1e-10,
            atol=1e-12,
        )


@pytest.mark.references
@pytest.mark.parametrize("sizes, output_size", [*ADAPTIVE_CASES, ((3, 4), (5, 7)), ((2,), 5)])
def test_reference_matches_torch_adaptive(torch, sizes, output_size):
    x = adaptive_input(sizes)
    np.testing.assert_allclose(
        R.adaptive_avg_pool_ref(x, output_size),
        torch_adaptive(torch, "avg", x, output_size),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        R.adaptive_max_pool_ref(x, output_size), torch_adaptive(torch, "max", x, output_size), rtol=0, atol=0
    )


@pytest.mark.references
@pytest.mark.parametrize("seed", range(0, 15))
def test_reference_patches_times_kernel_is_conv(seed):
    c = conv_config(seed)  # seeds < 15 have groups == 1
    w = c["k"].shape[:-2]
    patches = R.patches_ref(c["x"], w, c["stride"], c["pairs"], c["dilation"])
    np.testing.assert_allclose(
        patches @ c["k"].reshape(-1, c["k"].shape[-1]).astype(np.float64),
        R.conv_ref(c["x"], c["k"], None, c["stride"], c["pairs"], c["dilation"]),
        rtol=1e-10,
        atol=1e-10,
    )


@pytest.mark.references
def test_reference_patches_matches_torch_unfold(torch):
    """2-d patches equal torch's im2col (``unfold``) reordered from (C, kh, kw) to (kh, kw, C)."""
    rng = np.random.default_rng(5)
    x, window, stride, dilation, pairs = f32(rng, 2, 7, 8, 3), (3, 2), (2, 1), (1, 2), [(1, 1), (2, 2)]
    cols = torch.nn.functional.unfold(
        _to_torch(torch, x), window, dilation=dilation, padding=(1, 2), stride=stride
    ).numpy()  # (N, C*kh*kw, L)
    got = R.patches_ref(x, window, stride, pairs, dilation)
    n, oh, ow, _ = got.shape
    expected = cols.reshape(n, 3, *window, oh, ow).transpose(0, 4, 5, 2, 3, 1).reshape(got.shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=0)


@pytest.mark.references
def test_reference_padding_and_sizes_by_hand():
    assert R.resolve_padding_ref("SAME", (32,), 3, 2) == [(0, 1)]
    assert R.resolve_padding_ref("SAME", (7, 5), (4, 2), 1) == [(1, 2), (0, 1)]
    assert R.resolve_padding_ref("SAME", (10,), 3, 1, 2) == [(2, 2)]
    assert R.resolve_padding_ref("SAME", (5,), 2, 4) == [(0, 1)]
    assert R.resolve_padding_ref("VALID", (5, 5), 3) == [(0, 0), (0, 0)]
    assert R.resolve_padding_ref(1, (5, 5), 3) == [(1, 1), (1, 1)]
    assert R.resolve_padding_ref((1, 2), (5, 5), 3) == [(1, 1), (2, 2)]
    assert R.resolve_padding_ref(((0, 1), (2, 0)), (5, 5), 3) == [(0, 1), (2, 0)]
    assert R.output_size_ref(512, 5) == 508
    assert R.output_size_ref(227, 11, 4) == 55
    assert R.output_size_ref(32, 3, 2, "SAME") == 16
    assert R.adaptive_bins(5, 3) == [(0, 2), (1, 4), (3, 5)]


@pytest.mark.references
def test_reference_dense_and_globals():
    rng = np.random.default_rng(3)
    x, k, b = f32(rng, 2, 3, 4), f32(rng, 4, 5), f32(rng, 5)
    np.testing.assert_allclose(R.dense_ref(x, k, b), x.astype(np.float64) @ k + b, rtol=1e-6)
    x = f32(rng, 2, 3, 4, 5)
    np.testing.assert_allclose(R.global_avg_pool_ref(x), R.adaptive_avg_pool_ref(x, 1).reshape(2, 5))
    np.testing.assert_allclose(R.global_max_pool_ref(x), R.adaptive_max_pool_ref(x, 1).reshape(2, 5))


@pytest.mark.references
@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(1, 300), window=st.integers(1, 9), stride=st.integers(1, 6), dilation=st.integers(1, 4)
)
def test_reference_same_is_ceil_of_size_over_stride(size, window, stride, dilation):
    ((lo, hi),) = R.resolve_padding_ref("SAME", (size,), window, stride, dilation)
    assert 0 <= hi - lo <= 1
    assert R.output_size_ref(size, window, stride, "SAME", dilation) == math.ceil(size / stride)


# ============================================================================== conv / convolve numerics


@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_conv_matches_reference(seed):
    c = conv_config(seed)
    b = None if c["b"] is None else jnp.asarray(c["b"])
    out = F.conv(
        jnp.asarray(c["x"]),
        jnp.asarray(c["k"]),
        b,
        stride=c["stride"],
        padding=c["padding"],
        dilation=c["dilation"],
        groups=c["groups"],
    )
    assert out.dtype == jnp.float32
    assert_close(out, R.conv_ref(c["x"], c["k"], c["b"], c["stride"], c["pairs"], c["dilation"], c["groups"]))
    # the output shape agrees with conv_output_size dim by dim
    nd = c["x"].ndim - 2
    s, d = R.as_tuple(c["stride"], nd), R.as_tuple(c["dilation"], nd)
    sizes = tuple(
        F.conv_output_size(
            c["x"].shape[1 + i],
            c["k"].shape[i],
            stride=s[i],
            padding=per_dim_padding(c["padding"], i),
            dilation=d[i],
        )
        for i in range(nd)
    )
    assert out.shape == (c["x"].shape[0], *sizes, c["k"].shape[-1])


@pytest.mark.parametrize("seed", range(0, 60, 4))
def test_conv_matches_torch(torch, seed):
    c = conv_config(seed)
    b = None if c["b"] is None else jnp.asarray(c["b"])
    out = F.conv(
        jnp.asarray(c["x"]),
        jnp.asarray(c["k"]),
        b,
        stride=c["stride"],
        padding=c["padding"],
        dilation=c["dilation"],
        groups=c["groups"],
    )
    assert_close(
        out, torch_conv(torch, c["x"], c["k"], c["b"], c["stride"], c["pairs"], c["dilation"], c["groups"])
    )


@pytest.mark.parametrize(
    "x_shape, k_shape, kwargs, expected_shape",
    [
        ((1, 28, 28, 1), (5, 5, 1, 6), dict(padding=2), (1, 28, 28, 6)),  # LeNet-5 C1
        ((1, 7, 9, 2), (3, 3, 2, 1), dict(padding=(1, 2)), (1, 7, 11, 1)),  # ints per dim, not one pair
        ((1, 7, 9, 2), (3, 3, 2, 1), dict(padding=((0, 2), (1, 0))), (1, 7, 8, 1)),
        ((1, 32, 32, 3), (3, 3, 3, 4), dict(stride=2, padding="SAME"), (1, 16, 16, 4)),
        ((1, 9, 2), (2, 2, 4), dict(padding="SAME"), (1, 9, 4)),  # even kernel, SAME, 1-d
        ((2, 10, 3), (3, 3, 4), dict(dilation=2, padding="SAME"), (2, 10, 4)),
        ((1, 4, 5, 6, 4), (2, 2, 2, 2, 4), dict(groups=2, stride=(1, 2, 3)), (1, 3, 2, 2, 4)),
    ],
)
def test_conv_hand_picked_shapes(x_shape, k_shape, kwargs, expected_shape):
    rng = np.random.default_rng(0)
    x, k = f32(rng, *x_shape), f32(rng, *k_shape)
    out = F.conv(jnp.asarray(x), jnp.asarray(k), **kwargs)
    assert out.shape == expected_shape
    nd = x.ndim - 2
    pairs = R.resolve_padding_ref(
        kwargs.get("padding", "VALID"),
        x.shape[1:-1],
        k.shape[:nd],
        kwargs.get("stride", 1),
        kwargs.get("dilation", 1),
    )
    assert_close(
        out,
        R.conv_ref(
            x, k, None, kwargs.get("stride", 1), pairs, kwargs.get("dilation", 1), kwargs.get("groups", 1)
        ),
    )


def test_conv_depthwise_is_per_channel():
    """groups == C_in: each output channel sees only its own input channel."""
    rng = np.random.default_rng(1)
    x, k = f32(rng, 2, 6, 6, 3), f32(rng, 3, 3, 1, 3)
    out = np.asarray(F.conv(jnp.asarray(x), jnp.asarray(k), groups=3, padding="SAME"))
    for c in range(3):
        single = F.conv(jnp.asarray(x[..., c : c + 1]), jnp.asarray(k[..., c : c + 1]), padding="SAME")
        assert_close(out[..., c : c + 1], single)


@pytest.mark.parametrize("seed", range(1, 60, 5))
def test_convolve_is_conv_with_flipped_kernel(seed):
    c = conv_config(seed)
    b = None if c["b"] is None else jnp.asarray(c["b"])
    kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    out = F.convolve(jnp.asarray(c["x"]), jnp.asarray(c["k"]), b, **kw)
    assert_close(out, F.conv(jnp.asarray(c["x"]), jnp.asarray(flip_spatial(c["k"]).copy()), b, **kw))
    assert_close(
        out, R.convolve_ref(c["x"], c["k"], c["b"], c["stride"], c["pairs"], c["dilation"], c["groups"])
    )


@pytest.mark.parametrize(
    "shape, window", [((9,), (3,)), ((10,), (4,)), ((7, 6), (3, 2)), ((6, 7), (4, 3)), ((5, 4, 6), (2, 3, 3))]
)
@pytest.mark.parametrize("mode", ["valid", "full"])
def test_convolve_and_conv_match_scipy(shape, window, mode):
    rng = np.random.default_rng(11)
    x, k = f32(rng, 1, *shape, 1), f32(rng, *window, 1, 1)
    padding = "VALID" if mode == "valid" else tuple(f - 1 for f in window)
    x64, k64 = x[0, ..., 0].astype(np.float64), k[..., 0, 0].astype(np.float64)
    out = F.convolve(jnp.asarray(x), jnp.asarray(k), padding=padding)
    assert_close(out[0, ..., 0], scipy.signal.convolve(x64, k64, mode=mode, method="direct"))
    out = F.conv(jnp.asarray(x), jnp.asarray(k), padding=padding)
    assert_close(out[0, ..., 0], scipy.signal.correlate(x64, k64, mode=mode, method="direct"))


# =================================================================================== extract_patches


@pytest.mark.parametrize("seed", range(0, 15))
def test_extract_patches_matches_reference_and_conv(seed):
    c = conv_config(seed)  # seeds < 15 have groups == 1
    nd = c["x"].ndim - 2
    window = c["k"].shape[:nd]
    x = jnp.asarray(c["x"])
    patches = F.extract_patches(x, window, stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    assert patches.shape == (x.shape[0], *c["out_sizes"], math.prod(window) * x.shape[-1])
    assert_close(patches, R.patches_ref(c["x"], window, c["stride"], c["pairs"], c["dilation"]))
    conv = F.conv(x, jnp.asarray(c["k"]), stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
    assert_close(patches @ jnp.asarray(c["k"].reshape(-1, c["k"].shape[-1])), conv)


def test_extract_patches_int_window_and_defaults():
    rng = np.random.default_rng(2)
    x = f32(rng, 2, 5, 6, 3)
    patches = F.extract_patches(jnp.asarray(x), 2)
    assert patches.shape == (2, 4, 5, 12)
    assert_close(patches, R.patches_ref(x, 2))


# ================================================================================= conv_output_size


@pytest.mark.parametrize(
    "size, window, kwargs, expected",
    [
        (512, 5, dict(), 508),
        (28, 5, dict(padding=2), 28),
        (227, 11, dict(stride=4), 55),
        (227, 11, dict(stride=4, padding="VALID"), 55),
        (32, 3, dict(stride=2, padding="SAME"), 16),
        (7, 3, dict(stride=2, padding=1), 4),
        (10, 3, dict(dilation=2), 6),
        (10, 3, dict(dilation=2, padding="SAME"), 10),
        (10, 3, dict(dilation=3, padding=(3, 3)), 10),
        (9, 2, dict(dilation=4, stride=2), 3),
        (5, 2, dict(padding=(0, 1)), 5),
        (1, 1, dict(), 1),
        (1, 7, dict(padding="SAME"), 1),
    ],
)
def test_conv_output_size_hand_computed(size, window, kwargs, expected):
    assert F.conv_output_size(size, window, **kwargs) == expected
    assert type(F.conv_output_size(size, window, **kwargs)) is int


@pytest.mark.parametrize(
    "size, window, kwargs",
    [(3, 5, dict()), (5, 3, dict(dilation=3)), (2, 5, dict(padding=1)), (4, 4, dict(padding=(0, -1)))],
)
def test_conv_output_size_below_one_raises(size, window, kwargs):
    with pytest.raises(ValueError):
        F.conv_output_size(size, window, **kwargs)


_PAD_1D = st.one_of(
    st.sampled_from(["VALID", "SAME"]), st.integers(0, 5), st.tuples(st.integers(0, 5), st.integers(0, 5))
)


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 600),
    window=st.integers(1, 12),
    stride=st.integers(1, 6),
    dilation=st.integers(1, 4),
    padding=_PAD_1D,
)
def test_conv_output_size_formula(size, window, stride, padding, dilation):
    expected = R.output_size_ref(size, window, stride, padding, dilation)
    if expected < 1:
        with pytest.raises(ValueError):
            F.conv_output_size(size, window, stride=stride, padding=padding, dilation=dilation)
    else:
        assert F.conv_output_size(size, window, stride=stride, padding=padding, dilation=dilation) == expected
    if padding == "SAME":
        assert expected == math.ceil(size / stride)


# ============================================================================================== pools


def _pool_kwargs(c):
    kw = dict(padding=c["padding"])
    if c["stride"] is not None:
        kw["stride"] = c["stride"]
    return kw


@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_max_pool_matches_reference(seed):
    c = pool_config(seed)
    out = F.max_pool(jnp.asarray(c["x"]), c["window"], **_pool_kwargs(c))
    assert out.dtype == jnp.float32
    assert_close(out, R.max_pool_ref(c["x"], c["window"], c["stride"], c["pairs"]))


@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_avg_pool_matches_reference(seed):
    c = pool_config(seed)
    cip = c["count_include_pad"]
    out = F.avg_pool(jnp.asarray(c["x"]), c["window"], **_pool_kwargs(c), count_include_pad=cip)
    assert out.dtype == jnp.float32
    assert_close(out, R.avg_pool_ref(c["x"], c["window"], c["stride"], c["pairs"], count_include_pad=cip))


@pytest.mark.parametrize("seed", range(0, 30, 2))
def test_pools_match_torch(torch, seed):
    c = pool_config(seed)
    x, w, s, pairs = c["x"], c["window"], c["stride"], c["pairs"]
    assert_close(F.max_pool(jnp.asarray(x), w, **_pool_kwargs(c)), torch_max_pool(torch, x, w, s, pairs))
    cip = c["count_include_pad"]
    assert_close(
        F.avg_pool(jnp.asarray(x), w, **_pool_kwargs(c), count_include_pad=cip),
        torch_avg_pool(torch, x, w, s, pairs, cip),
    )


@pytest.mark.parametrize("padding", [1, "SAME", ((1, 0), (0, 1)), (1, 0)])
def test_max_pool_padded_cells_never_win(padding):
    rng = np.random.default_rng(4)
    x = (-1.0 - rng.random((2, 5, 6, 3))).astype(np.float32)  # every value < -1, padding would be 0
    out = np.asarray(F.max_pool(jnp.asarray(x), 3, stride=2, padding=padding))
    assert (out < -1.0).all()
    pairs = R.resolve_padding_ref(padding, x.shape[1:-1], 3, 2)
    assert_close(out, R.max_pool_ref(x, 3, 2, pairs))


def test_max_pool_stride_defaults_to_window():
    rng = np.random.default_rng(6)
    x = jnp.asarray(f32(rng, 2, 7, 9, 2))
    out = F.max_pool(x, (2, 3))
    assert out.shape == (2, 3, 3, 2)
    assert_close(out, F.max_pool(x, (2, 3), stride=(2, 3)))
    assert F.avg_pool(x, 2).shape == (2, 3, 4, 2)


def test_avg_pool_count_include_pad_at_borders():
    x = jnp.ones((1, 4, 4, 1), jnp.float32)
    included = np.asarray(F.avg_pool(x, 3, stride=1, padding=1, count_include_pad=True))[0, ..., 0]
    expected = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]) / 9.0
    np.testing.assert_allclose(included, expected, rtol=1e-6)
    excluded = np.asarray(F.avg_pool(x, 3, stride=1, padding=1, count_include_pad=False))[0, ..., 0]
    np.testing.assert_allclose(excluded, np.ones((4, 4)), rtol=1e-6)
    # default is count_include_pad=True (PyTorch's default)
    np.testing.assert_allclose(
        np.asarray(F.avg_pool(x, 3, stride=1, padding=1))[0, ..., 0], expected, rtol=1e-6
    )


@pytest.mark.parametrize("shape", [(2, 7, 3), (2, 5, 4, 3), (2, 3, 4, 5, 2)])
def test_global_pools(shape):
    rng = np.random.default_rng(8)
    x = f32(rng, *shape)
    avg, mx = F.global_avg_pool(jnp.asarray(x)), F.global_max_pool(jnp.asarray(x))
    assert avg.shape == mx.shape == (shape[0], shape[-1])
    assert_close(avg, R.global_avg_pool_ref(x))
    assert_close(mx, R.global_max_pool_ref(x))


@pytest.mark.parametrize("sizes, output_size", ADAPTIVE_CASES)
def test_adaptive_pools_match_reference_and_torch(torch, sizes, output_size):
    x = adaptive_input(sizes)
    avg = F.adaptive_avg_pool(jnp.asarray(x), output_size)
    mx = F.adaptive_max_pool(jnp.asarray(x), output_size)
    nd = len(sizes)
    assert avg.shape == mx.shape == (2, *R.as_tuple(output_size, nd), 3)
    assert_close(avg, R.adaptive_avg_pool_ref(x, output_size))
    assert_close(mx, R.adaptive_max_pool_ref(x, output_size))
    assert_close(avg, torch_adaptive(torch, "avg", x, output_size))
    assert_close(mx, torch_adaptive(torch, "max", x, output_size))


@pytest.mark.parametrize("sizes", [(5,), (6, 6), (3, 5, 4)])
def test_adaptive_pools_identity_and_int_vs_tuple(sizes):
    x = jnp.asarray(adaptive_input(sizes))
    assert_close(F.adaptive_avg_pool(x, sizes), x)
    assert_close(F.adaptive_max_pool(x, sizes), x)
    nd = len(sizes)
    assert_close(F.adaptive_avg_pool(x, 2), F.adaptive_avg_pool(x, (2,) * nd))
    assert_close(F.adaptive_max_pool(x, 1), F.global_max_pool(x).reshape((2,) + (1,) * nd + (3,)))


def test_adaptive_avg_pool_divisible_is_avg_pool():
    x = jnp.asarray(adaptive_input((8, 6)))
    assert_close(F.adaptive_avg_pool(x, (4, 2)), F.avg_pool(x, (2, 3)))
    assert_close(F.adaptive_max_pool(x, (4, 2)), F.max_pool(x, (2, 3)))


def test_adaptive_pools_output_larger_than_input(torch):
    """PyTorch allows output_size > input size (bins repeat cells); assumed supported here too."""
    x = adaptive_input((3, 4))
    assert_close(F.adaptive_avg_pool(jnp.asarray(x), (5, 7)), torch_adaptive(torch, "avg", x, (5, 7)))
    assert_close(F.adaptive_max_pool(jnp.asarray(x), (5, 7)), torch_adaptive(torch, "max", x, (5, 7)))


# ============================================================================================== dense


@pytest.mark.parametrize("x_shape", [(4, 3), (2, 5, 3)])
@pytest.mark.parametrize("use_bias", [False, True])
def test_dense_matches_reference(x_shape, use_bias):
    rng = np.random.default_rng(9)
    x, k, b = f32(rng, *x_shape), f32(rng, 3, 6), f32(rng, 6)
    out = F.dense(jnp.asarray(x), jnp.asarray(k), jnp.asarray(b) if use_bias else None)
    assert out.shape == x_shape[:-1] + (6,)
    assert_close(out, R.dense_ref(x, k, b if use_bias else None))


# ====================================================================================== dtypes


def test_dtypes_are_preserved():
    """float64 stays float64 (under x64) and bfloat16 stays bfloat16; nothing is silently upcast to f32."""
    rng = np.random.default_rng(10)
    x, k = f32(rng, 1, 6, 6, 2), f32(rng, 3, 3, 2, 4)
    for dtype in (jnp.bfloat16,):
        xd, kd = jnp.asarray(x, dtype), jnp.asarray(k, dtype)
        assert F.conv(xd, kd, padding=1).dtype == dtype
        assert F.max_pool(xd, 2).dtype == dtype
        assert F.avg_pool(xd, 2).dtype == dtype
    with jax.enable_x64(True):
        x64, k64 = jnp.asarray(x, jnp.float64), jnp.asarray(k, jnp.float64)
        assert F.conv(x64, k64, padding=1).dtype == jnp.float64
        assert F.avg_pool(x64, 2).dtype == jnp.float64
        assert F.adaptive_avg_pool(x64, 3).dtype == jnp.float64
        kg = f32(rng, 3, 3, 1, 4)
        out = F.conv(x64, jnp.asarray(kg, jnp.float64), padding="SAME", groups=2, stride=2)
        pairs = R.resolve_padding_ref("SAME", (6, 6), 3, 2)
        np.testing.assert_allclose(
            np.asarray(out), R.conv_ref(x, kg, None, 2, pairs, 1, 2), rtol=1e-12, atol=1e-12
        )


# ========================================================================================= gradients


def _grad_inputs(seed, *shapes, distinct=False):
    rng = np.random.default_rng(seed)
    out = []
    for shape in shapes:
        if distinct:  # well-separated distinct values: no ties for max, stable under finite differences
            a = rng.permutation(math.prod(shape)).reshape(shape) * 0.1 - 1.0
        else:
            a = rng.standard_normal(shape)
        out.append(jnp.asarray(a, jnp.float64))
    return out


GRAD_CASES = {
    "conv1d": (
        lambda x, k, b: F.conv(x, k, b, stride=2, padding=((1, 2),), dilation=2),
        [(2, 9, 2), (3, 2, 3), (3,)],
    ),
    "conv2d_groups": (
        lambda x, k, b: F.conv(x, k, b, stride=(2, 1), padding="SAME", groups=2),
        [(1, 5, 6, 4), (3, 2, 2, 4), (4,)],
    ),
    "conv3d": (lambda x, k: F.conv(x, k, padding=1, dilation=(1, 2, 1)), [(1, 3, 4, 3, 2), (2, 2, 2, 2, 2)]),
    "convolve2d": (
        lambda x, k: F.convolve(x, k, padding=((0, 1), (2, 0)), stride=2),
        [(1, 5, 6, 2), (3, 2, 2, 3)],
    ),
    "dense": (lambda x, k, b: F.dense(x, k, b), [(3, 4), (4, 5), (5,)]),
    "extract_patches": (lambda x: F.extract_patches(x, (2, 3), stride=2, padding=1), [(1, 5, 6, 2)]),
    "avg_pool_incl": (lambda x: F.avg_pool(x, 3, stride=2, padding=1), [(1, 6, 5, 2)]),
    "avg_pool_excl": (
        lambda x: F.avg_pool(x, (3, 2), stride=1, padding=((1, 0), (0, 1)), count_include_pad=False),
        [(1, 5, 4, 2)],
    ),
    "adaptive_avg": (lambda x: F.adaptive_avg_pool(x, (3, 2)), [(1, 7, 5, 2)]),
}
GRAD_CASES_DISTINCT = {
    "max_pool": (lambda x: F.max_pool(x, 3, stride=2, padding=1), [(1, 6, 5, 2)]),
    "max_pool1d_pairs": (lambda x: F.max_pool(x, 2, padding=((1, 0),)), [(2, 7, 2)]),
    "max_pool3d": (lambda x: F.max_pool(x, 2), [(1, 4, 4, 4, 1)]),
    "adaptive_max": (lambda x: F.adaptive_max_pool(x, (3, 2)), [(1, 7, 5, 2)]),
    "global_max": (lambda x: F.global_max_pool(x), [(2, 3, 4, 2)]),
}


@pytest.mark.parametrize("name", list(GRAD_CASES) + list(GRAD_CASES_DISTINCT))
def test_gradients(name):
    distinct = name in GRAD_CASES_DISTINCT
    fn, shapes = (GRAD_CASES_DISTINCT if distinct else GRAD_CASES)[name]
    with jax.enable_x64(True):
        args = _grad_inputs(len(name), *shapes, distinct=distinct)
        assert fn(*args).dtype == jnp.float64
        check_grads(fn, args, order=1, modes=("fwd", "rev"))


# ============================================================================ jit / vmap / grad safety

_RNG = np.random.default_rng(12)
_K = f32(_RNG, 3, 2, 2, 4)  # 2-d kernel for C_in=4, groups=2
_B = f32(_RNG, 4)
_KD = f32(_RNG, 4, 6)  # dense kernel for C=4
_BD = f32(_RNG, 6)

TRANSFORM_OPS = {
    "conv": lambda x: F.conv(
        x,
        jnp.asarray(_K),
        jnp.asarray(_B),
        stride=(2, 1),
        padding=((1, 0), (0, 2)),
        dilation=(1, 2),
        groups=2,
    ),
    "convolve": lambda x: F.convolve(x, jnp.asarray(_K), groups=2, padding="SAME"),
    "max_pool": lambda x: F.max_pool(x, 3, stride=2, padding=1),
    "avg_pool": lambda x: F.avg_pool(x, (2, 3), stride=1, padding="SAME", count_include_pad=False),
    "global_avg_pool": lambda x: F.global_avg_pool(x),
    "global_max_pool": lambda x: F.global_max_pool(x),
    "adaptive_avg_pool": lambda x: F.adaptive_avg_pool(x, (4, 3)),
    "adaptive_max_pool": lambda x: F.adaptive_max_pool(x, 3),
    "dense": lambda x: F.dense(x, jnp.asarray(_KD), jnp.asarray(_BD)),
    "extract_patches": lambda x: F.extract_patches(x, 2, stride=2, padding=1, dilation=1),
}


@pytest.mark.parametrize("name", list(TRANSFORM_OPS))
def test_jit_and_vmap_match_eager(name):
    op = TRANSFORM_OPS[name]
    xs = jnp.asarray(f32(np.random.default_rng(13), 3, 2, 7, 6, 4))  # an extra leading axis of 3
    eager = np.stack([np.asarray(op(x)) for x in xs])
    assert_close(jax.jit(op)(xs[0]), eager[0])
    assert_close(jax.vmap(op)(xs), eager)
    assert_close(jax.jit(jax.vmap(op))(xs), eager)


def test_vmap_over_kernels_matches_loop():
    """An ensemble: one kernel (and bias) per member, the same input."""
    rng = np.random.default_rng(14)
    x, ks, bs = (
        jnp.asarray(f32(rng, 2, 6, 5, 4)),
        jnp.asarray(f32(rng, 3, 3, 3, 2, 6)),
        jnp.asarray(f32(rng, 3, 6)),
    )
    fn = lambda k, b: F.conv(x, k, b, padding="SAME", groups=2)
    expected = np.stack([np.asarray(fn(k, b)) for k, b in zip(ks, bs, strict=True)])
    assert_close(jax.vmap(fn)(ks, bs), expected)


@pytest.mark.parametrize(
    "name", ["conv", "max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "extract_patches"]
)
def test_grad_under_jit_matches_eager_grad(name):
    op = TRANSFORM_OPS[name]
    x = jnp.asarray(f32(np.random.default_rng(13), 2, 7, 6, 4))
    grad = jax.grad(lambda x: jnp.sum(jnp.tanh(op(x)) ** 2))
    eager = np.asarray(grad(x))
    assert np.isfinite(eager).all()
    assert_close(jax.jit(grad)(x), eager)


# =================================================================================== argument errors


def _z(*shape, dtype=np.float32):
    return jnp.zeros(shape, dtype)


X2 = (1, 6, 6, 4)  # a 2-d input with 4 channels
K2 = (3, 3, 4, 2)

# (id, exception type, regex the message must contain, call)
ERROR_CASES = [
    # x rank
    ("conv_x_rank_1", ValueError, r"\bx\b", lambda: F.conv(_z(3), _z(3, 3, 2))),
    ("conv_kernel_4d", ValueError, r"kernel", lambda: F.conv(_z(1, 2, 2, 2, 2, 3), _z(1, 1, 1, 1, 3, 2))),
    ("max_pool_x_rank_2", ValueError, r"\bx\b", lambda: F.max_pool(_z(4, 3), 2)),
    ("max_pool_x_rank_6", ValueError, r"\bx\b", lambda: F.max_pool(_z(1, 2, 2, 2, 2, 3), 1)),
    ("avg_pool_x_rank_2", ValueError, r"\bx\b", lambda: F.avg_pool(_z(4, 3), 2)),
    ("global_avg_pool_x_rank_2", ValueError, r"\bx\b", lambda: F.global_avg_pool(_z(4, 3))),
    ("global_max_pool_x_rank_2", ValueError, r"\bx\b", lambda: F.global_max_pool(_z(4, 3))),
    ("adaptive_avg_pool_x_rank_2", ValueError, r"\bx\b", lambda: F.adaptive_avg_pool(_z(4, 3), 2)),
    ("extract_patches_x_rank_2", ValueError, r"\bx\b", lambda: F.extract_patches(_z(4, 3), 2)),
    # kernel rank / channels / groups
    ("conv_kernel_rank_high", ValueError, r"kernel", lambda: F.conv(_z(*X2), _z(3, 3, 3, 4, 2))),
    ("conv_kernel_rank_low", ValueError, r"kernel", lambda: F.conv(_z(*X2), _z(4, 2))),
    ("convolve_kernel_rank", ValueError, r"kernel", lambda: F.convolve(_z(*X2), _z(4, 2))),
    ("conv_cin_mismatch", ValueError, r"kernel", lambda: F.conv(_z(*X2), _z(3, 3, 3, 2))),
    (
        "conv_cin_mismatch_groups",
        ValueError,
        r"kernel|groups",
        lambda: F.conv(_z(*X2), _z(3, 3, 4, 2), groups=2),
    ),
    (
        "conv_cin_not_divisible",
        ValueError,
        r"groups",
        lambda: F.conv(_z(1, 6, 6, 3), _z(3, 3, 1, 4), groups=2),
    ),
    ("conv_cout_not_divisible", ValueError, r"groups", lambda: F.conv(_z(*X2), _z(3, 3, 2, 3), groups=2)),
    ("conv_groups_0", ValueError, r"groups", lambda: F.conv(_z(*X2), _z(*K2), groups=0)),
    ("conv_groups_negative", ValueError, r"groups", lambda: F.conv(_z(*X2), _z(*K2), groups=-2)),
    ("conv_groups_float", TypeError, r"groups", lambda: F.conv(_z(*X2), _z(3, 3, 2, 2), groups=2.0)),
    ("conv_groups_str", TypeError, r"groups", lambda: F.conv(_z(*X2), _z(3, 3, 2, 2), groups="2")),
    # bias
    ("conv_bias_wrong_length", ValueError, r"bias", lambda: F.conv(_z(*X2), _z(*K2), _z(3))),
    ("conv_bias_2d", ValueError, r"bias", lambda: F.conv(_z(*X2), _z(*K2), _z(2, 2))),
    ("convolve_bias_wrong_length", ValueError, r"bias", lambda: F.convolve(_z(*X2), _z(*K2), _z(5))),
    # stride
    ("conv_stride_0", ValueError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=0)),
    ("conv_stride_negative", ValueError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=-1)),
    ("conv_stride_tuple_0", ValueError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=(1, 0))),
    ("conv_stride_float", TypeError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=1.5)),
    ("conv_stride_too_long", ValueError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=(1, 1, 1))),
    ("conv_stride_too_short", ValueError, r"stride", lambda: F.conv(_z(*X2), _z(*K2), stride=(1,))),
    ("max_pool_stride_0", ValueError, r"stride", lambda: F.max_pool(_z(*X2), 2, stride=0)),
    ("avg_pool_stride_too_long", ValueError, r"stride", lambda: F.avg_pool(_z(*X2), 2, stride=(1, 1, 1))),
    ("extract_patches_stride_0", ValueError, r"stride", lambda: F.extract_patches(_z(*X2), 2, stride=0)),
    # dilation
    ("conv_dilation_0", ValueError, r"dilation", lambda: F.conv(_z(*X2), _z(*K2), dilation=0)),
    ("conv_dilation_negative", ValueError, r"dilation", lambda: F.conv(_z(*X2), _z(*K2), dilation=(1, -1))),
    ("conv_dilation_too_long", ValueError, r"dilation", lambda: F.conv(_z(*X2), _z(*K2), dilation=(1, 1, 1))),
    (
        "extract_patches_dilation_0",
        ValueError,
        r"dilation",
        lambda: F.extract_patches(_z(*X2), 2, dilation=0),
    ),
    # padding
    ("conv_padding_unknown", ValueError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding="FULL")),
    ("conv_padding_garbage", ValueError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding="bogus")),
    ("conv_padding_negative", ValueError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding=-1)),
    ("conv_padding_ints_negative", ValueError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding=(1, -1))),
    (
        "conv_padding_pair_negative",
        ValueError,
        r"padding",
        lambda: F.conv(_z(*X2), _z(*K2), padding=((0, 1), (1, -2))),
    ),
    ("conv_padding_too_long", ValueError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding=(1, 1, 1))),
    (
        "conv_padding_pairs_too_short",
        ValueError,
        r"padding",
        lambda: F.conv(_z(*X2), _z(*K2), padding=((1, 1),)),
    ),
    (
        "conv_padding_malformed_pair",
        ValueError,
        r"padding",
        lambda: F.conv(_z(*X2), _z(*K2), padding=((1, 2, 3), (0, 0))),
    ),
    (
        "conv_padding_pair_float",
        TypeError,
        r"padding",
        lambda: F.conv(_z(*X2), _z(*K2), padding=((1, 1.5), (0, 0))),
    ),
    ("conv_padding_float", TypeError, r"padding", lambda: F.conv(_z(*X2), _z(*K2), padding=1.5)),
    (
        "extract_patches_padding_negative",
        ValueError,
        r"padding",
        lambda: F.extract_patches(_z(*X2), 2, padding=-1),
    ),
    ("max_pool_padding_unknown", ValueError, r"padding", lambda: F.max_pool(_z(*X2), 2, padding="FULL")),
    # pooling padding over half the window
    ("max_pool_padding_over_half", ValueError, r"padding", lambda: F.max_pool(_z(*X2), 2, padding=2)),
    ("max_pool_padding_window_1", ValueError, r"padding", lambda: F.max_pool(_z(*X2), 1, padding=1)),
    ("avg_pool_padding_over_half", ValueError, r"padding", lambda: F.avg_pool(_z(*X2), 3, padding=2)),
    (
        "avg_pool_pair_over_half",
        ValueError,
        r"padding",
        lambda: F.avg_pool(_z(*X2), 3, stride=1, padding=((0, 2), (0, 0))),
    ),
    ("max_pool_ints_over_half", ValueError, r"padding", lambda: F.max_pool(_z(*X2), (4, 2), padding=(2, 2))),
    # window too large for the (padded) input: output size < 1
    (
        "conv_kernel_larger_than_input",
        ValueError,
        r"kernel|window",
        lambda: F.conv(_z(1, 3, 3, 1), _z(5, 5, 1, 1)),
    ),
    (
        "conv_dilated_kernel_larger_than_input",
        ValueError,
        r"kernel|window|dilation",
        lambda: F.conv(_z(1, 5, 5, 1), _z(3, 3, 1, 1), dilation=3),
    ),
    ("max_pool_window_larger_than_input", ValueError, r"window", lambda: F.max_pool(_z(1, 3, 3, 1), 4)),
    (
        "avg_pool_window_larger_than_input",
        ValueError,
        r"window",
        lambda: F.avg_pool(_z(1, 3, 5, 1), (5, 2), padding=((1, 0), (0, 0))),
    ),
    ("extract_patches_window_larger", ValueError, r"window", lambda: F.extract_patches(_z(1, 3, 3, 1), 4)),
    # window
    ("max_pool_window_0", ValueError, r"window", lambda: F.max_pool(_z(*X2), 0)),
    ("avg_pool_window_tuple_0", ValueError, r"window", lambda: F.avg_pool(_z(*X2), (2, 0))),
    ("max_pool_window_too_long", ValueError, r"window", lambda: F.max_pool(_z(*X2), (2, 2, 2))),
    ("max_pool_window_float", TypeError, r"window", lambda: F.max_pool(_z(*X2), 2.0)),
    ("extract_patches_window_0", ValueError, r"window", lambda: F.extract_patches(_z(*X2), 0)),
    # adaptive output_size
    ("adaptive_avg_output_0", ValueError, r"output_size", lambda: F.adaptive_avg_pool(_z(*X2), 0)),
    ("adaptive_max_output_0", ValueError, r"output_size", lambda: F.adaptive_max_pool(_z(*X2), (2, 0))),
    ("adaptive_avg_output_negative", ValueError, r"output_size", lambda: F.adaptive_avg_pool(_z(*X2), -1)),
    (
        "adaptive_avg_output_too_long",
        ValueError,
        r"output_size",
        lambda: F.adaptive_avg_pool(_z(*X2), (2, 2, 2, 2)),
    ),
    (
        "adaptive_max_output_too_long",
        ValueError,
        r"output_size",
        lambda: F.adaptive_max_pool(_z(1, 6, 4), (2, 2, 2, 2)),
    ),
    ("adaptive_avg_output_float", TypeError, r"output_size", lambda: F.adaptive_avg_pool(_z(*X2), 2.5)),
    # dtypes
    ("conv_int_x", TypeError, r"\bx\b", lambda: F.conv(_z(*X2, dtype=np.int32), _z(*K2))),
    ("conv_int_kernel", TypeError, r"kernel", lambda: F.conv(_z(*X2), _z(*K2, dtype=np.int32))),
    ("conv_bool_x", TypeError, r"\bx\b", lambda: F.conv(_z(*X2, dtype=np.bool_), _z(*K2))),
    ("convolve_int_x", TypeError, r"\bx\b", lambda: F.convolve(_z(*X2, dtype=np.int32), _z(*K2))),
    ("avg_pool_int_x", TypeError, r"\bx\b", lambda: F.avg_pool(_z(*X2, dtype=np.int32), 2)),
    ("adaptive_avg_pool_int_x", TypeError, r"\bx\b", lambda: F.adaptive_avg_pool(_z(*X2, dtype=np.int32), 2)),
    # dense
    ("dense_kernel_mismatch", ValueError, r"kernel", lambda: F.dense(_z(2, 3), _z(4, 5))),
    ("dense_kernel_1d", ValueError, r"kernel", lambda: F.dense(_z(2, 3), _z(3))),
    ("dense_kernel_3d", ValueError, r"kernel", lambda: F.dense(_z(2, 3), _z(3, 4, 5))),
    ("dense_bias_wrong", ValueError, r"bias", lambda: F.dense(_z(2, 3), _z(3, 5), _z(4))),
    ("dense_int_kernel", TypeError, r"kernel", lambda: F.dense(_z(2, 3), _z(3, 5, dtype=np.int32))),
    # conv_output_size
    ("conv_output_size_stride_0", ValueError, r"stride", lambda: F.conv_output_size(10, 3, stride=0)),
    ("conv_output_size_window_0", ValueError, r"window", lambda: F.conv_output_size(10, 0)),
    ("conv_output_size_dilation_0", ValueError, r"dilation", lambda: F.conv_output_size(10, 3, dilation=0)),
    (
        "conv_output_size_padding_unknown",
        ValueError,
        r"padding",
        lambda: F.conv_output_size(10, 3, padding="FULL"),
    ),
    (
        "conv_output_size_padding_negative",
        ValueError,
        r"padding",
        lambda: F.conv_output_size(10, 3, padding=-1),
    ),
    ("conv_output_size_too_small", ValueError, r"size|window|output", lambda: F.conv_output_size(3, 5)),
]

_JAX_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, __import__("jaxlib")))


@pytest.mark.parametrize("exc, pattern, call", [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_argument_errors(exc, pattern, call):
    with pytest.raises(exc, match=pattern) as info:
        call()
    # a plain Python error of the library, raised by the library before anything reaches jax/XLA
    assert type(info.value) in (ValueError, TypeError) or not type(info.value).__module__.startswith("jax")
    raised_in = str(info.traceback[-1].path)
    assert not raised_in.startswith(_JAX_DIRS), f"raised inside jax: {raised_in}"


def test_argument_errors_under_jit():
    """Shapes are static, so validation also happens while tracing under jit."""
    with pytest.raises(ValueError, match="stride"):
        jax.jit(lambda x: F.conv(x, _z(*K2), stride=0))(_z(*X2))
    with pytest.raises(ValueError, match="padding"):
        jax.jit(lambda x: F.max_pool(x, 2, padding=2))(_z(*X2))
