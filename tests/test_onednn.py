"""The oneDNN primitive (`jaxcnn.functional._onednn`) against XLA's convolution (`lax.conv_general_dilated`):
values (float32, and bfloat16 where the CPU has it), gradients of both operands, forward mode and second
derivatives, vmap over the batch, the kernel or both, jit with donation, batch sharding over 8 simulated
devices and pmap, two threads at once, the same bits run to run, XLA's lowering off CPU, and nothing loaded
at import. Skipped where the extension did not build (the rest of the suite then runs XLA's paths). Speed:
`experiments/conv_paths.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from test_functional import assert_close, conv_config

from jaxcnn.functional import _onednn, _xla_conv
from jaxcnn.functional.conv import conv_plan

pytestmark = pytest.mark.skipif(not _onednn.available(), reason="jaxcnn's oneDNN extension is unavailable")
RTOL = 1e-4  # sums in another order: float32 rounding differs, relative to the output's magnitude


def _convs(x_shape, k_shape, stride=1, padding="VALID", dilation=1, groups=1):
    """oneDNN's and XLA's convolution for these arguments, as functions of (x, kernel)."""
    geometry = conv_plan(x_shape, k_shape, stride, padding, dilation, groups).geometry
    onednn = lambda x, k: _onednn.conv(x, k, *geometry)
    xla = lambda x, k: _xla_conv.xla_conv(x, k, *geometry[:4], None)
    return onednn, xla


def _values_and_grads(fn, x, k):
    loss = lambda x, k: jnp.sum(jnp.sin(fn(x, k)))
    return jax.jit(lambda x, k: (fn(x, k), jax.grad(loss, argnums=(0, 1))(x, k)))(x, k)


def _assert_trees_close(actual, expected, rtol=RTOL):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, rtol=rtol)


def _config_convs(seed):
    c = conv_config(seed)
    convs = _convs(c["x"].shape, c["k"].shape, c["stride"], c["padding"], c["dilation"], c["groups"])
    return convs, c["x"], c["k"]


# Every rank, padding form and groups form (1-, 2-, 3-d; single, depthwise, multiplier, grouped).
@pytest.mark.parametrize("seed", range(0, 60, 2))
def test_values_and_gradients_match_xla(seed):
    (onednn, xla), x, k = _config_convs(seed)
    _assert_trees_close(_values_and_grads(onednn, x, k), _values_and_grads(xla, x, k))


@pytest.mark.skipif(not _onednn.native_bfloat16(), reason="this CPU has no bfloat16 arithmetic")
@pytest.mark.parametrize("seed", range(1, 60, 6))
def test_bfloat16_values_and_gradients_match_xla(seed):
    """bfloat16 arrays, products summed in float32 by both: equal up to the rounding of the results."""
    (onednn, xla), x, k = _config_convs(seed)
    x, k = x.astype(jnp.bfloat16), k.astype(jnp.bfloat16)
    actual, expected = _values_and_grads(onednn, x, k), _values_and_grads(xla, x, k)
    assert {a.dtype for a in jax.tree.leaves(actual)} == {jnp.dtype(jnp.bfloat16)}
    _assert_trees_close(actual, expected, rtol=1e-2)  # bfloat16 keeps 8 bits: one rounding is 0.4%


def test_larger_layer_with_blocked_kernel_formats_matches_xla():
    """Channel counts where oneDNN reorders the kernel into a blocked layout (the small configs do not)."""
    rng = np.random.default_rng(0)
    x, k = rng.standard_normal((4, 9, 9, 16), np.float32), rng.standard_normal((3, 3, 8, 32), np.float32)
    onednn, xla = _convs(x.shape, k.shape, stride=(2, 1), padding="SAME", groups=2)
    _assert_trees_close(_values_and_grads(onednn, x, k), _values_and_grads(xla, x, k))


def test_forward_mode_and_second_derivatives():
    """jvp and Hessian-vector products run the three primitives; checked against finite differences."""
    rng = np.random.default_rng(2)
    x, k = 0.3 * rng.standard_normal((2, 7, 6, 4)), 0.3 * rng.standard_normal((3, 2, 2, 6))
    onednn, xla = _convs(x.shape, k.shape, stride=(2, 1), padding="SAME", dilation=(1, 2), groups=2)
    args = (x.astype(np.float32), k.astype(np.float32))
    fn = lambda x, k: jnp.sin(onednn(x, k))
    jax.test_util.check_grads(fn, args, order=2, modes=("fwd", "rev"), atol=5e-2, rtol=5e-2)
    tangents = tuple(np.ones_like(a) for a in args)
    _assert_trees_close(jax.jvp(onednn, args, tangents), jax.jvp(xla, args, tangents))
    hessian_vector = lambda f: jax.jvp(jax.grad(lambda x, k: jnp.sum(jnp.sin(f(x, k))), 1), args, tangents)
    _assert_trees_close(hessian_vector(onednn), hessian_vector(xla))


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("in_axes", [(0, None), (None, 0), (0, 0), (1, 3)])
def test_vmap_over_batch_kernel_or_both(groups, in_axes):
    """A mapped batch folds into N, a mapped kernel (an ensemble) into the channels, both into groups;
    the gradients run the other two primitives under the same fold."""
    rng = np.random.default_rng(3)
    onednn, xla = _convs((2, 7, 6, 4), (3, 2, 4 // groups, 6), stride=(2, 1), padding=1, groups=groups)
    x = rng.standard_normal((3, 2, 7, 6, 4), np.float32)  # 3 along the mapped axis
    k = rng.standard_normal((3, 3, 2, 4 // groups, 6), np.float32)
    x = x[0] if in_axes[0] is None else np.moveaxis(x, 0, in_axes[0])
    k = k[0] if in_axes[1] is None else np.moveaxis(k, 0, in_axes[1])
    mapped = lambda f: jax.jit(jax.vmap(lambda x, k: _values_and_grads(f, x, k), in_axes))(x, k)
    _assert_trees_close(mapped(onednn), mapped(xla))


def test_per_example_gradients_fold_into_the_batch():
    """vmap(grad) over examples maps x and the cotangent: the kernel gradients of 5 examples at once."""
    rng = np.random.default_rng(4)
    x, k = rng.standard_normal((5, 1, 6, 6, 3), np.float32), rng.standard_normal((3, 3, 3, 8), np.float32)
    results = []
    for f in _convs(x.shape[1:], k.shape, padding="SAME"):
        grad = jax.grad(lambda k, x, f=f: jnp.sum(jnp.sin(f(x, k))))
        results.append(jax.jit(jax.vmap(grad, in_axes=(None, 0)))(k, x))
    _assert_trees_close(*results)


def test_jit_with_donated_input():
    rng = np.random.default_rng(5)
    x, k = rng.standard_normal((2, 8, 8, 3), np.float32), rng.standard_normal((3, 3, 3, 3), np.float32)
    onednn, xla = _convs(x.shape, k.shape, padding=1)
    expected = xla(x, k)
    step = jax.jit(lambda x, k: onednn(x, k) + 1.0, donate_argnums=0)
    assert_close(step(jnp.asarray(x), k), expected + 1.0, rtol=RTOL)


def test_batch_sharding_stays_sharded_over_8_devices():
    """jit with a batch-sharded NamedSharding: each device convolves its share of the batch (no gather),
    the kernel gradient is summed across devices, and values and gradients match one device's."""
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rng = np.random.default_rng(6)
    x, k = rng.standard_normal((16, 6, 6, 3), np.float32), rng.standard_normal((3, 3, 3, 4), np.float32)
    onednn, xla = _convs(x.shape, k.shape, padding=1)
    sharded = jax.device_put(x, NamedSharding(mesh, P("batch")))
    step = jax.jit(lambda x, k: _values_and_grads(onednn, x, k))
    y, (dx, dk) = step(sharded, k)
    _assert_trees_close((y, (dx, dk)), _values_and_grads(xla, x, k))
    assert y.sharding.spec == dx.sharding.spec == P("batch")
    hlo = step.lower(sharded, k).compile().as_text()
    assert "jaxcnn_onednn_conv" in hlo and "all-gather" not in hlo
    assert "f32[2,6,6,4]" in hlo  # the per-device batch of 16 / 8


def test_pmap_runs_per_device():
    rng = np.random.default_rng(7)
    x, k = rng.standard_normal((8, 2, 6, 6, 3), np.float32), rng.standard_normal((3, 3, 3, 4), np.float32)
    onednn, xla = _convs(x.shape[1:], k.shape, padding=1)
    grads = jax.pmap(lambda x, k: _values_and_grads(onednn, x, k), in_axes=(0, None))(x, k)
    _assert_trees_close(grads, jax.vmap(lambda x: _values_and_grads(xla, x, k))(x))


def test_two_programs_from_two_threads_at_once():
    """Two jitted programs share the primitive cache and run concurrently: each gets its own result."""
    rng = np.random.default_rng(8)
    cases = []
    for shape, kernel in [((16, 12, 12, 8), (3, 3, 8, 16)), ((8, 10, 10, 16), (3, 3, 16, 8))]:
        x, k = rng.standard_normal(shape, np.float32), rng.standard_normal(kernel, np.float32)
        onednn, _ = _convs(shape, kernel, padding=1)
        program = jax.jit(lambda x, k, f=onednn: _values_and_grads(f, x, k))
        cases.append((program, x, k, jax.device_get(program(x, k))))
    failures = []

    def run(program, x, k, expected):
        for _ in range(20):
            got = jax.device_get(program(x, k))
            if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected))):
                failures.append(program)

    threads = [threading.Thread(target=run, args=case) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_same_bits_run_to_run():
    rng = np.random.default_rng(9)
    x, k = rng.standard_normal((32, 10, 10, 8), np.float32), rng.standard_normal((3, 3, 8, 16), np.float32)
    onednn, _ = _convs(x.shape, k.shape, padding=1)
    first = jax.device_get(_values_and_grads(onednn, x, k))
    for _ in range(3):
        again = jax.device_get(_values_and_grads(onednn, x, k))
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(first)))


def test_other_platforms_lower_to_xla_convolutions():
    """A program exported for GPU holds XLA's convolutions, not the CPU-only custom call."""
    onednn, _ = _convs((2, 8, 8, 3), (3, 3, 3, 4), padding=1)
    x, k = jax.ShapeDtypeStruct((2, 8, 8, 3), jnp.float32), jax.ShapeDtypeStruct((3, 3, 3, 4), jnp.float32)
    fn = jax.jit(lambda x, k: _values_and_grads(onednn, x, k))
    assert "jaxcnn_onednn_conv" in fn.lower(x, k).as_text()
    gpu = jax.export.export(fn, platforms=["cuda"])(x, k).mlir_module()
    assert "jaxcnn_onednn_conv" not in gpu and "stablehlo.convolution" in gpu


def _python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_import_loads_nothing_and_disabling_logs_one_line():
    code = (
        "import jaxcnn, jax, jax.numpy as jnp\n"
        "from jaxcnn.functional import _onednn\n"
        "maps = open('/proc/self/maps').read()\n"
        "assert 'libdnnl' not in maps and _onednn.available.cache_info().currsize == 0, 'loaded on import'\n"
        "print(_onednn.available(), _onednn.available())\n"
    )
    loaded = _python(code)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split() == ["True", "True"] and "oneDNN" not in loaded.stderr
    disabled = _python(code, JAXCNN_ONEDNN="0")
    assert disabled.stdout.split() == ["False", "False"]
    assert [line for line in disabled.stderr.splitlines() if "oneDNN" in line] == [
        "jaxcnn: CPU convolutions on XLA, not oneDNN: JAXCNN_ONEDNN=0"
    ]
