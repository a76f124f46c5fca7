"""Properties of convolution and pooling that the course notes state, checked on random cases.

Shift equivariance of convolution, shift equivariance of max pooling for shifts that are
multiples of the stride, linearity of convolution, and the output-size formula.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxcnn import functional as F

FAST = settings(max_examples=30, deadline=None)


def _array(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _shift(x: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """`x (N, H, W, C)` moved down and right; what leaves one side comes back on the other."""
    return np.roll(x, (rows, columns), axis=(1, 2))


@FAST
@given(
    size=st.tuples(st.integers(7, 14), st.integers(7, 14)),
    channels=st.integers(1, 3),
    features=st.integers(1, 3),
    window=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    dilation=st.integers(1, 2),
    shift=st.tuples(st.integers(0, 3), st.integers(0, 3)),
    seed=st.integers(0, 2**16),
)
def test_convolution_commutes_with_shifts_away_from_the_border(
    size, channels, features, window, dilation, shift, seed
):
    x = _array(seed, (1, *size, channels))
    kernel = _array(seed + 1, (*window, channels, features))
    out = np.asarray(F.conv(x, kernel, dilation=dilation))
    shifted_out = np.asarray(F.conv(_shift(x, *shift), kernel, dilation=dilation))
    (dy, dx), (height, width) = shift, out.shape[1:3]
    # Output (i, j) sees rows i .. i + span - 1: from row dy on, none of them wrapped around.
    np.testing.assert_allclose(
        shifted_out[:, dy:, dx:], out[:, : height - dy, : width - dx], rtol=1e-5, atol=1e-5
    )


@FAST
@given(
    window=st.integers(1, 3),
    stride=st.integers(1, 3),
    cells=st.tuples(st.integers(3, 6), st.integers(3, 6)),
    shift=st.tuples(st.integers(0, 2), st.integers(0, 2)),
    leftover=st.integers(0, 2),
    channels=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_max_pooling_commutes_with_shifts_by_multiples_of_the_stride(
    window, stride, cells, shift, leftover, channels, seed
):
    # `cells` windows per dim, then up to `stride - 1` trailing pixels that no window covers.
    size = tuple(stride * (n - 1) + window + leftover % stride for n in cells)
    x = _array(seed, (2, *size, channels))
    pooled = np.asarray(F.max_pool(x, window, stride))
    shifted = np.asarray(F.max_pool(_shift(x, stride * shift[0], stride * shift[1]), window, stride))
    (dy, dx), (height, width) = shift, pooled.shape[1:3]
    np.testing.assert_array_equal(shifted[:, dy:, dx:], pooled[:, : height - dy, : width - dx])


@FAST
@given(
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    size=st.integers(8, 12),  # the largest dilated window spans 7
    window=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.sampled_from(["VALID", "SAME", 1, ((0, 2), (1, 0))]),
    dilation=st.integers(1, 2),
    groups=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**16),
)
def test_convolution_is_linear_in_its_input(a, b, size, window, stride, padding, dilation, groups, seed):
    x, y = _array(seed, (2, size, size, 4)), _array(seed + 1, (2, size, size, 4))
    kernel = _array(seed + 2, (window, window, 4 // groups, 6))
    conv = lambda v: np.asarray(
        F.conv(v, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups), np.float64
    )
    scale = 1 + abs(a) + abs(b)
    np.testing.assert_allclose(conv(a * x + b * y), a * conv(x) + b * conv(y), rtol=1e-4, atol=1e-4 * scale)


@FAST
@given(
    size=st.integers(1, 40),
    window=st.integers(1, 7),
    stride=st.integers(1, 5),
    padding=st.one_of(st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3))),
    dilation=st.integers(1, 3),
)
def test_conv_output_size_follows_the_formula(size, window, stride, padding, dilation):
    low, high = (padding, padding) if isinstance(padding, int) else padding
    span = dilation * (window - 1) + 1
    if size + low + high < span:  # the window does not fit: no output
        with pytest.raises(ValueError):
            F.conv_output_size(size, window, stride, padding, dilation)
        return
    expected = (size + low + high - span) // stride + 1
    assert F.conv_output_size(size, window, stride, padding, dilation) == expected
    # The size an actual (1-d, so cheap) convolution produces; one dim's pair is written ((lo, hi),).
    x, kernel = np.zeros((1, size, 1), np.float32), np.zeros((window, 1, 1), np.float32)
    conv_padding = (padding,) if isinstance(padding, tuple) else padding
    out = F.conv(x, kernel, stride=stride, padding=conv_padding, dilation=dilation)
    assert out.shape == (1, expected, 1)
