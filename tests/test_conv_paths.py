"""Every CPU lowering of `jaxcnn.functional` agrees with the reference one (`lax.conv_general_dilated`,
`lax.reduce_window`) in values and gradients, on the random configs of `test_functional.py`; the
environment variables force the paths. Speed is measured by `experiments/benchmark.py`, not here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_functional import CONV_SEEDS, POOL_SEEDS, assert_close, conv_config, pool_config

from jaxcnn import functional as F
from jaxcnn.functional import _cpu_paths, _onednn

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4  # sums in another order: float32 rounding differs, relative to the output's magnitude


def _values_and_grads(fn, *args):
    """`fn(*args)` and the gradient of a non-linear scalar of it wrt every argument, jitted as one
    new function (so it is traced under the current environment, and compiled once rather than op by op)."""
    loss = lambda *a: jnp.sum(jnp.sin(fn(*a)))
    grad = jax.grad(loss, argnums=tuple(range(len(args))))
    return jax.jit(lambda *a: (fn(*a), grad(*a)))(*args)


def _conv_fn(c):
    kwargs = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    if c["b"] is None:
        return lambda x, k: F.conv(x, k, **kwargs), (c["x"], c["k"])
    return lambda x, k, b: F.conv(x, k, b, **kwargs), (c["x"], c["k"], c["b"])


def _assert_trees_close(actual, expected):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, rtol=RTOL)


# im2col on every config; the others on fewer: "tap_grad" applies to ungrouped convolutions (seeds 0-14),
# "im2col_grad" is XLA's forward with im2col's derivatives, both already covered.
PATH_SEEDS = [("im2col", s) for s in CONV_SEEDS]
PATH_SEEDS += [("tap_grad", s) for s in range(15)] + [("im2col_grad", s) for s in range(0, 60, 4)]
PATH_SEEDS += [("onednn", s) for s in range(1, 60, 4)]  # the primitive itself: tests/test_onednn.py


@pytest.mark.parametrize("path, seed", PATH_SEEDS)
def test_conv_path_matches_xla(monkeypatch, path, seed):
    fn, args = _conv_fn(conv_config(seed))
    monkeypatch.setenv("JAXCNN_CONV_PATH", "xla")
    expected = _values_and_grads(fn, *args)
    monkeypatch.setenv("JAXCNN_CONV_PATH", path)
    _assert_trees_close(_values_and_grads(fn, *args), expected)


@pytest.mark.parametrize("path", ["onednn", "im2col", "im2col_grad", "tap_grad"])
@pytest.mark.parametrize("seed", range(0, 60, 7))
def test_convolve_path_matches_xla(monkeypatch, path, seed):
    c = conv_config(seed)
    kwargs = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    fn = lambda x, k: F.convolve(x, k, **kwargs)
    monkeypatch.setenv("JAXCNN_CONV_PATH", "xla")
    expected = _values_and_grads(fn, c["x"], c["k"])
    monkeypatch.setenv("JAXCNN_CONV_PATH", path)
    _assert_trees_close(_values_and_grads(fn, c["x"], c["k"]), expected)


@pytest.mark.parametrize("path", ["onednn", "im2col_grad", "tap_grad"])
def test_custom_derivative_paths_pass_check_grads(monkeypatch, path):
    """Forward and reverse mode to second order (Hessian-vector products) against finite differences."""
    monkeypatch.setenv("JAXCNN_CONV_PATH", path)
    rng = np.random.default_rng(2)
    x, k = 0.3 * rng.standard_normal((2, 7, 6, 3)), 0.3 * rng.standard_normal((3, 2, 3, 4))
    fn = lambda x, k: jnp.sin(F.conv(x, k, stride=(2, 1), padding="SAME", dilation=(1, 2)))
    jax.test_util.check_grads(fn, (x.astype(np.float32), k.astype(np.float32)), order=2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("path", ["onednn", "im2col", "im2col_grad", "tap_grad"])
@pytest.mark.parametrize("groups", [1, 2])
def test_paths_are_jit_grad_and_vmap_safe(monkeypatch, path, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 9, 8, 4), np.float32)
    k = rng.standard_normal((3, 3, 4 // groups, 6), np.float32)
    fn = lambda x, k: F.conv(x, k, stride=(2, 1), padding="SAME", dilation=(1, 2), groups=groups)
    batched = lambda x, k: jax.vmap(fn)(x, jnp.broadcast_to(k, (3, *k.shape)))
    per_example_grad = jax.vmap(jax.grad(lambda x, k: jnp.sum(fn(x, k) ** 2), argnums=1), in_axes=(0, None))
    results = {}
    for setting in ("xla", path):
        monkeypatch.setenv("JAXCNN_CONV_PATH", setting)
        results[setting] = (
            jax.jit(lambda x, k: batched(x, k))(x, k),  # a new function: traced under this path
            per_example_grad(x, k),
            jax.jacfwd(lambda k: fn(x[0, :1], k).sum(axis=(1, 2)))(k),
        )
    _assert_trees_close(results[path], results["xla"])


def _max_pool_fn(c):
    return lambda x: F.max_pool(x, c["window"], c["stride"], c["padding"])


@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_max_pool_paths_match_xla(monkeypatch, seed):
    c = pool_config(seed)
    fn = _max_pool_fn(c)
    monkeypatch.setenv("JAXCNN_POOL_PATH", "xla")
    expected = _values_and_grads(fn, c["x"])
    monkeypatch.setenv("JAXCNN_POOL_PATH", "reshape")  # falls back to xla where windows overlap or pad
    _assert_trees_close(_values_and_grads(fn, c["x"]), expected)


@pytest.mark.parametrize(
    "shape, window",
    [
        ((2, 9, 3), 2),
        ((2, 8, 7, 3), 2),
        ((2, 9, 6, 2), (3, 2)),
        ((1, 4, 5, 6, 2), (2, 1, 3)),
        ((2, 6, 6, 1), 1),
    ],
)
def test_reshape_max_pool_matches_xla_with_ties(monkeypatch, shape, window):
    """Ties (ReLU's zeros, repeated values) send the gradient to the first maximum, as select-and-scatter."""
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape), 0).astype(np.float32)  # many equal values
    x[0] = 0.0
    fn = lambda x: F.max_pool(x, window)
    results = {}
    for path in ("xla", "reshape"):
        monkeypatch.setenv("JAXCNN_POOL_PATH", path)
        g = jax.grad(lambda x: jnp.sum(fn(x) * jnp.arange(1.0, fn(x).size + 1).reshape(fn(x).shape)))(x)
        results[path] = (fn(x), g, jax.jit(jax.vmap(lambda x: fn(x[None])))(x))
    for a, e in zip(results["reshape"], results["xla"], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _jaxpr_text(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))  # nested jaxprs (jit, custom_vjp) are printed too


@pytest.mark.parametrize(
    "setting, channels, expected",
    [("xla", 1, True), ("im2col", 16, False), ("tap_grad", 16, True), ("auto", 1, False), ("AUTO", 3, False)],
)
def test_env_var_forces_conv_path(monkeypatch, setting, channels, expected):
    monkeypatch.setenv("JAXCNN_CONV_PATH", setting)
    x, k = jnp.ones((2, 8, 8, channels)), jnp.ones((3, 3, channels, 4))
    grad = jax.grad(lambda x, k: F.conv(x, k, padding=1).sum(), argnums=(0, 1))
    assert ("conv_general_dilated" in _jaxpr_text(grad, x, k)) == expected


@pytest.mark.skipif(not _onednn.available(), reason="jaxcnn's oneDNN extension is unavailable")
@pytest.mark.parametrize("setting", ["auto", "onednn"])
def test_onednn_serves_float32_on_cpu_and_xla_the_rest(monkeypatch, setting):
    """oneDNN computes the convolution and both gradients of float32 arrays; other dtypes keep XLA's paths."""
    monkeypatch.setenv("JAXCNN_CONV_PATH", setting)
    grad = jax.grad(lambda x, k: F.conv(x, k, padding=1).sum(), argnums=(0, 1))
    x, k = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 4))
    text = _jaxpr_text(grad, x, k)
    assert all(f"computes={array}" in text for array in "xwy") and "conv_general_dilated" not in text
    text = _jaxpr_text(grad, x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert "onednn_conv" not in text and "conv_general_dilated" in text


def test_im2col_grad_uses_xla_forward_only_when_not_differentiated(monkeypatch):
    monkeypatch.setenv("JAXCNN_CONV_PATH", "im2col_grad")
    x, k = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 32))
    forward = jax.jit(lambda x, k: F.conv(x, k, padding=1))
    assert "convolution" in forward.lower(x, k).as_text()
    kernel_grad = jax.jit(jax.grad(lambda x, k: F.conv(x, k, padding=1).sum(), argnums=1))
    assert "convolution" not in kernel_grad.lower(x, k).compile().as_text()


# (kernel shape, batch, out sizes, path with XLA's own convolution, path with YNNPACK's): the rows of
# the tables above `conv_path`.
MEASURED_LAYERS = [
    ((5, 5, 1, 6), 128, (28, 28), "im2col", "im2col"),
    ((5, 5, 6, 16), 128, (10, 10), "im2col", "im2col"),
    ((3, 3, 1, 32), 128, (28, 28), "im2col_grad", "im2col_grad"),
    ((3, 3, 3, 16), 128, (32, 32), "im2col", "im2col"),
    ((7, 7, 3, 64), 8, (112, 112), "xla", "im2col_grad"),
    ((3, 3, 8, 32), 128, (28, 28), "xla", "im2col_grad"),
    ((3, 3, 32, 64), 128, (14, 14), "xla", "tap_grad"),
    ((3, 3, 24, 24), 128, (28, 28), "xla", "tap_grad"),
    ((3, 3, 16, 16), 128, (32, 32), "xla", "xla"),
    ((3, 3, 16, 32), 128, (16, 16), "xla", "tap_grad"),
    ((3, 3, 32, 32), 128, (16, 16), "xla", "tap_grad"),
    ((3, 3, 40, 40), 128, (14, 14), "xla", "tap_grad"),
    ((3, 3, 64, 64), 128, (8, 8), "xla", "tap_grad"),
    ((3, 3, 32, 64), 128, (8, 8), "xla", "im2col"),
    ((3, 3, 64, 64), 128, (7, 7), "xla", "im2col"),
    ((3, 3, 64, 64), 8, (56, 56), "xla", "tap_grad"),
    ((3, 3, 512, 512), 8, (7, 7), "xla", "im2col"),
    ((3, 3, 32, 32), 512, (16, 16), "xla", "tap_grad"),
]
THREADED = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,reduce"
YNN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce"


@pytest.mark.parametrize("kernel_shape, batch, out_sizes, threaded, ynn", MEASURED_LAYERS)
def test_auto_rule_on_measured_layers(monkeypatch, kernel_shape, batch, out_sizes, threaded, ynn):
    monkeypatch.setenv("JAXCNN_CONV_PATH", "auto")
    for flags, expected in [(THREADED, threaded), (YNN_CONVOLUTIONS, ynn), ("", ynn)]:
        monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {flags}")
        assert _cpu_paths.xla_conv_path(kernel_shape, 1, batch, out_sizes) == expected, flags


def test_auto_keeps_xla_off_cpu_and_for_groups(monkeypatch):
    monkeypatch.setenv("JAXCNN_CONV_PATH", "auto")
    monkeypatch.setenv("JAXCNN_POOL_PATH", "auto")
    assert _cpu_paths.xla_conv_path((3, 3, 1, 8), 4, 128, (28, 28)) == "xla"
    monkeypatch.setattr(_cpu_paths._onednn, "available", lambda: False)
    assert _cpu_paths.conv_path((3, 3, 1, 8), 4, 128, (28, 28), jnp.float32) == "xla"
    monkeypatch.setattr(_cpu_paths.jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(_cpu_paths._onednn, "available", lambda: True)
    assert _cpu_paths.conv_path((3, 3, 1, 8), 1, 128, (28, 28), jnp.float32) == "xla"
    assert _cpu_paths.max_pool_path((2, 2), (2, 2), ((0, 0), (0, 0))) == "xla"


def _compiled_conv(code: str, env: dict) -> str:
    """The compiled HLO of a small convolution, in a fresh process that runs `code` first."""
    program = code + (
        "\nimport jax, jax.numpy as jnp\n"
        "from jaxcnn import functional as F\n"
        "conv = jax.jit(lambda x, k: F.conv(x, k, padding=1))\n"
        "print(conv.lower(jnp.ones((32, 14, 14, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text())\n"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAXCNN_CONV_PATH": "xla", **env}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "code, flags, on_ynnpack",
    [
        ("import jaxcnn", "", False),  # jaxcnn keeps convolutions on XLA's own, threaded code
        ("import jaxcnn", YNN_CONVOLUTIONS, True),  # a flag the user set is kept
        ("import jax; jax.devices()", "", True),  # the backend started first: the flag would be ignored
    ],
)
def test_import_keeps_convolutions_off_ynnpack(code, flags, on_ynnpack):
    hlo = _compiled_conv(code, {"XLA_FLAGS": flags})
    assert ("__ynn_fusion" in hlo) == on_ynnpack
    assert "convolution(" in hlo


def test_flag_is_only_added_before_the_backend_starts_and_when_unset(monkeypatch):
    monkeypatch.setattr(_cpu_paths.xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    _cpu_paths.keep_convolutions_off_ynnpack()
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {THREADED}"
    assert _cpu_paths.xla_convolutions_threaded()
    _cpu_paths.keep_convolutions_off_ynnpack()  # once only
    assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1
    monkeypatch.setenv("XLA_FLAGS", YNN_CONVOLUTIONS)
    _cpu_paths.keep_convolutions_off_ynnpack()
    assert os.environ["XLA_FLAGS"] == YNN_CONVOLUTIONS
    assert not _cpu_paths.xla_convolutions_threaded()
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(_cpu_paths.jaxlib.version, "__version_info__", (0, 9, 0))  # without the flag
    _cpu_paths.keep_convolutions_off_ynnpack()
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setattr(_cpu_paths.jaxlib.version, "__version_info__", (0, 10, 2))
    monkeypatch.setattr(_cpu_paths.xla_bridge, "backends_are_initialized", lambda: True)
    _cpu_paths.keep_convolutions_off_ynnpack()
    assert "XLA_FLAGS" not in os.environ


@pytest.mark.parametrize("setting, expected", [("xla", "reduce_window_max"), ("reshape", "argmax")])
def test_env_var_forces_pool_path(monkeypatch, setting, expected):
    monkeypatch.setenv("JAXCNN_POOL_PATH", setting)
    grad = jax.grad(lambda x: F.max_pool(x, 2).sum())
    assert expected in _jaxpr_text(grad, jnp.ones((2, 8, 8, 3)))


@pytest.mark.parametrize("variable", ["JAXCNN_CONV_PATH", "JAXCNN_POOL_PATH"])
def test_bad_env_value_is_named(monkeypatch, variable):
    monkeypatch.setenv(variable, "fast")
    with pytest.raises(ValueError, match=variable):
        F.max_pool(F.conv(jnp.ones((1, 4, 4, 1)), jnp.ones((1, 1, 1, 1))), 2)


@pytest.mark.slow
def test_benchmark_quick_runs(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    # One CPU device, as a user runs it, not conftest's eight simulated ones.
    flags = [f for f in env.pop("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    done = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "benchmark.py"), "--quick", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jaxcnn/torch" in done.stdout
    results = json.loads(out.read_text())
    peers = results["models"]["lenet5"]["peers"]
    assert {"jaxcnn", "jaxcnn[xla]", "flax"} <= set(peers)
    assert all(p["train_examples_per_sec"] > 0 for p in peers.values())
    assert results["loop"]["loop_examples_per_sec"] > 0
