"""Every CPU lowering of `jaxcnn.functional` agrees with the reference one (`lax.conv_general_dilated`,
`lax.reduce_window`) in values and gradients, on the random configs of `test_functional.py`; the `impl`
argument forces a lowering. `jaxcnn.configure_cpu` sets XLA's flag and malloc's reuse; importing jaxcnn sets
nothing.
Speed is measured by `experiments/benchmark.py`, not here.
"""

from __future__ import annotations

import ctypes
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

import jaxcnn
from jaxcnn import functional as F
from jaxcnn import runtime
from jaxcnn.functional import _cpu_paths, _onednn

ROOT = Path(__file__).resolve().parents[1]
ONEDNN = _onednn.available()  # False where the extension is missing or JAXCNN_ONEDNN=0
RTOL = 1e-4  # sums in another order: float32 rounding differs, relative to the output's magnitude


def _values_and_grads(fn, *args):
    """`fn(*args)` and the gradient of a non-linear scalar of it wrt every argument, jitted as one
    function (compiled once rather than op by op)."""
    loss = lambda *a: jnp.sum(jnp.sin(fn(*a)))
    grad = jax.grad(loss, argnums=tuple(range(len(args))))
    return jax.jit(lambda *a: (fn(*a), grad(*a)))(*args)


def _conv_fn(c, impl):
    kwargs = dict(
        stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"], impl=impl
    )
    if c["b"] is None:
        return lambda x, k: F.conv(x, k, **kwargs), (c["x"], c["k"])
    return lambda x, k, b: F.conv(x, k, b, **kwargs), (c["x"], c["k"], c["b"])


def _assert_trees_close(actual, expected):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert_close(a, e, rtol=RTOL)


# im2col on every config; the others on fewer: "tap_grad" applies to ungrouped convolutions (seeds 0-14),
# "im2col_grad" is XLA's forward with im2col's derivatives, both already covered.
IMPL_SEEDS = [("im2col", s) for s in CONV_SEEDS]
IMPL_SEEDS += [("tap_grad", s) for s in range(15)] + [("im2col_grad", s) for s in range(0, 60, 4)]
IMPL_SEEDS += [("onednn", s) for s in range(1, 60, 4)]  # the primitive itself: tests/test_onednn.py


@pytest.mark.parametrize("impl, seed", IMPL_SEEDS)
def test_conv_impl_matches_xla(impl, seed):
    c = conv_config(seed)
    results = {
        setting: _values_and_grads(fn, *args)
        for setting in ("xla", impl)
        for fn, args in [_conv_fn(c, setting)]
    }
    _assert_trees_close(results[impl], results["xla"])


@pytest.mark.parametrize("impl", ["onednn", "im2col", "im2col_grad", "tap_grad"])
@pytest.mark.parametrize("seed", range(0, 60, 7))
def test_convolve_impl_matches_xla(impl, seed):
    c = conv_config(seed)
    kwargs = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["groups"])
    expected = _values_and_grads(lambda x, k: F.convolve(x, k, **kwargs, impl="xla"), c["x"], c["k"])
    got = _values_and_grads(lambda x, k: F.convolve(x, k, **kwargs, impl=impl), c["x"], c["k"])
    _assert_trees_close(got, expected)


@pytest.mark.parametrize("impl", ["onednn", "im2col_grad", "tap_grad"])
def test_custom_derivative_impls_pass_check_grads(impl):
    """Forward and reverse mode to second order (Hessian-vector products) against finite differences."""
    rng = np.random.default_rng(2)
    x, k = 0.3 * rng.standard_normal((2, 7, 6, 3)), 0.3 * rng.standard_normal((3, 2, 3, 4))
    fn = lambda x, k: jnp.sin(F.conv(x, k, stride=(2, 1), padding="SAME", dilation=(1, 2), impl=impl))
    jax.test_util.check_grads(fn, (x.astype(np.float32), k.astype(np.float32)), order=2, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("impl", ["onednn", "im2col", "im2col_grad", "tap_grad"])
@pytest.mark.parametrize("groups", [1, 2])
def test_impls_are_jit_grad_and_vmap_safe(impl, groups):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 9, 8, 4), np.float32)
    k = rng.standard_normal((3, 3, 4 // groups, 6), np.float32)

    def transformed(impl):
        fn = lambda x, k: F.conv(
            x, k, stride=(2, 1), padding="SAME", dilation=(1, 2), groups=groups, impl=impl
        )
        batched = lambda x, k: jax.vmap(fn)(x, jnp.broadcast_to(k, (3, *k.shape)))
        per_example_grad = jax.vmap(
            jax.grad(lambda x, k: jnp.sum(fn(x, k) ** 2), argnums=1), in_axes=(0, None)
        )
        return (
            jax.jit(batched)(x, k),
            per_example_grad(x, k),
            jax.jacfwd(lambda k: fn(x[0, :1], k).sum(axis=(1, 2)))(k),
        )

    _assert_trees_close(transformed(impl), transformed("xla"))


@pytest.mark.parametrize("seed", POOL_SEEDS)
def test_max_pool_impls_match_xla(seed):
    c = pool_config(seed)
    pool = lambda impl: lambda x: F.max_pool(x, c["window"], c["stride"], c["padding"], impl=impl)
    expected = _values_and_grads(pool("xla"), c["x"])
    # "reshape" falls back to xla where windows overlap or pad
    _assert_trees_close(_values_and_grads(pool("reshape"), c["x"]), expected)


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
def test_reshape_max_pool_matches_xla_with_ties(shape, window):
    """Ties (ReLU's zeros, repeated values) send the gradient to the first maximum, as select-and-scatter."""
    rng = np.random.default_rng(1)
    x = np.round(rng.standard_normal(shape), 0).astype(np.float32)  # many equal values
    x[0] = 0.0

    def results(impl):
        fn = lambda x: F.max_pool(x, window, impl=impl)
        g = jax.grad(lambda x: jnp.sum(fn(x) * jnp.arange(1.0, fn(x).size + 1).reshape(fn(x).shape)))(x)
        return fn(x), g, jax.jit(jax.vmap(lambda x: fn(x[None])))(x)

    for a, e in zip(results("reshape"), results("xla"), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(e))


def _jaxpr_text(fn, *args) -> str:
    return str(jax.make_jaxpr(fn)(*args))  # nested jaxprs (jit, custom_vjp) are printed too


@pytest.mark.parametrize(
    "impl, channels, expected",
    [
        ("xla", 1, True),
        ("im2col", 16, False),
        ("tap_grad", 16, True),
        ("onednn", 16, not ONEDNN),
        ("auto", 1, False),
        ("auto", 16, not ONEDNN),
    ],
)
def test_impl_forces_the_conv_lowering(impl, channels, expected):
    x, k = jnp.ones((2, 8, 8, channels)), jnp.ones((3, 3, channels, 4))
    grad = jax.grad(lambda x, k: F.conv(x, k, padding=1, impl=impl).sum(), argnums=(0, 1))
    assert ("conv_general_dilated" in _jaxpr_text(grad, x, k)) == expected


@pytest.mark.parametrize("impl, expected", [("xla", "reduce_window_max"), ("reshape", "argmax")])
def test_impl_forces_the_pool_lowering(impl, expected):
    grad = jax.grad(lambda x: F.max_pool(x, 2, impl=impl).sum())
    assert expected in _jaxpr_text(grad, jnp.ones((2, 8, 8, 3)))


@pytest.mark.skipif(not ONEDNN, reason="jaxcnn's oneDNN extension is unavailable")
@pytest.mark.parametrize("impl", ["auto", "onednn"])
def test_onednn_serves_its_dtypes_on_cpu_and_xla_the_rest(impl):
    """oneDNN computes the convolution and both gradients of float32 arrays (and bfloat16 ones where the
    CPU has its arithmetic); other dtypes keep XLA's."""
    grad = jax.grad(lambda x, k: F.conv(x, k, padding=1, impl=impl).sum(), argnums=(0, 1))
    x, k = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 4))
    text = _jaxpr_text(grad, x, k)
    assert all(f"computes={array}" in text for array in "xwy") and "conv_general_dilated" not in text
    for dtype in (jnp.bfloat16, jnp.float16):
        text = _jaxpr_text(grad, x.astype(dtype), k.astype(dtype))
        on_onednn = np.dtype(dtype) in _cpu_paths.onednn_dtypes()
        assert ("onednn_conv" in text) == on_onednn and ("conv_general_dilated" in text) != on_onednn


def test_im2col_grad_uses_xla_forward_only_when_not_differentiated():
    x, k = jnp.ones((2, 8, 8, 1)), jnp.ones((3, 3, 1, 32))
    conv = lambda x, k: F.conv(x, k, padding=1, impl="im2col_grad")
    assert "convolution" in jax.jit(conv).lower(x, k).as_text()
    kernel_grad = jax.jit(jax.grad(lambda x, k: conv(x, k).sum(), argnums=1))
    assert "convolution" not in kernel_grad.lower(x, k).compile().as_text()


@pytest.mark.parametrize("impl", ["fast", "AUTO", "", None])
def test_bad_impl_is_named(impl):
    x, k = jnp.ones((1, 4, 4, 1)), jnp.ones((1, 1, 1, 1))
    for call in (lambda: F.conv(x, k, impl=impl), lambda: F.convolve(x, k, impl=impl)):
        with pytest.raises(ValueError, match="impl must be one of 'auto', 'onednn', 'xla', 'im2col'"):
            call()
    with pytest.raises(ValueError, match="impl must be one of 'auto', 'xla', 'reshape'"):
        F.max_pool(x, 2, impl=impl)


@pytest.mark.parametrize("variable", ["JAXCNN_CONV_PATH", "JAXCNN_POOL_PATH"])
def test_environment_variables_are_not_read(monkeypatch, variable):
    """The lowering is the `impl` argument alone: no hidden input that jit's cache would not see."""
    monkeypatch.setenv(variable, "im2col" if variable == "JAXCNN_CONV_PATH" else "xla")  # once forcing
    x, k = jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 4))
    jaxpr = _jaxpr_text(jax.grad(lambda x: F.max_pool(F.conv(x, k, padding=1), 2).sum()), x)
    auto_conv = "onednn_conv" if ONEDNN else "conv_general_dilated"
    assert auto_conv in jaxpr and "argmax" in jaxpr  # what "auto" picks on CPU here


# (kernel shape, batch, out sizes, lowering with XLA's own convolution, with YNNPACK's): the rows of
# the tables in docs/conv-lowerings.md.
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
THREADED = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
YNN_CONVOLUTIONS = "--xla_cpu_experimental_ynn_fusion_type=individual_dot,individual_convolution,reduce"


@pytest.mark.parametrize("kernel_shape, batch, out_sizes, threaded, ynn", MEASURED_LAYERS)
def test_auto_rule_on_measured_layers(kernel_shape, batch, out_sizes, threaded, ynn):
    assert _cpu_paths.xla_conv_impl(kernel_shape, 1, batch, out_sizes, threaded=True) == threaded
    assert _cpu_paths.xla_conv_impl(kernel_shape, 1, batch, out_sizes, threaded=False) == ynn


@pytest.fixture
def fresh_threading_decision():
    """`runtime.xla_cpu_convolutions_threaded` to be decided in the test, and again from the real
    XLA_FLAGS after it."""
    runtime.xla_cpu_convolutions_threaded.cache_clear()
    yield
    runtime.xla_cpu_convolutions_threaded.cache_clear()


@pytest.mark.parametrize("flags, threaded", [(THREADED, True), (YNN_CONVOLUTIONS, False), ("", False)])
def test_which_convolution_xla_runs_is_read_once(monkeypatch, fresh_threading_decision, flags, threaded):
    """Read from XLA_FLAGS at the first call (as XLA reads them when its backend starts), not at every
    convolution's trace: a later change of the variable changes no lowering."""
    monkeypatch.setenv("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {flags}")
    assert runtime.xla_cpu_convolutions_threaded() is threaded
    monkeypatch.setenv("XLA_FLAGS", YNN_CONVOLUTIONS if threaded else THREADED)
    assert runtime.xla_cpu_convolutions_threaded() is threaded


def test_auto_keeps_xla_off_cpu_and_for_groups_and_forcing_respects_geometry(monkeypatch):
    no_pads = ((0, 0), (0, 0))
    f32 = jnp.float32
    assert _cpu_paths.xla_conv_impl((3, 3, 1, 8), 4, 128, (28, 28), threaded=True) == "xla"
    assert _cpu_paths.max_pool_impl("auto", (2, 2), (2, 2), no_pads) == "reshape"
    assert _cpu_paths.max_pool_impl("reshape", (3, 3), (2, 2), no_pads) == "xla"  # windows overlap
    assert _cpu_paths.max_pool_impl("reshape", (2, 2), (2, 2), ((1, 1), (0, 0))) == "xla"  # padded
    monkeypatch.setattr(_cpu_paths._onednn, "available", lambda: False)
    assert _cpu_paths.conv_impl("auto", (3, 3, 1, 8), 4, 128, (28, 28), f32) == "xla"
    assert _cpu_paths.conv_impl("onednn", (3, 3, 1, 8), 1, 128, (28, 28), f32) == "xla"  # not loaded
    assert _cpu_paths.conv_impl("tap_grad", (3, 3, 1, 8), 4, 128, (28, 28), f32) == "xla"  # ungrouped only
    monkeypatch.setattr(_cpu_paths._onednn, "available", lambda: True)
    assert _cpu_paths.conv_impl("auto", (3, 3, 1, 8), 4, 128, (28, 28), f32) == "onednn"
    assert _cpu_paths.conv_impl("auto", (3, 3, 1, 8), 1, 128, (28, 28), jnp.float16) == "im2col"
    monkeypatch.setattr(_cpu_paths.jax, "default_backend", lambda: "gpu")
    assert _cpu_paths.conv_impl("auto", (3, 3, 1, 8), 1, 128, (28, 28), f32) == "xla"
    assert _cpu_paths.max_pool_impl("auto", (2, 2), (2, 2), no_pads) == "xla"
    assert _cpu_paths.conv_impl("im2col", (3, 3, 1, 8), 1, 128, (28, 28), f32) == "im2col"  # forced anywhere


@pytest.mark.parametrize("native", [True, False])
def test_bfloat16_takes_onednn_only_where_the_cpu_has_its_arithmetic(monkeypatch, native):
    monkeypatch.setattr(_cpu_paths._onednn, "available", lambda: True)  # the rule, with or without the build
    monkeypatch.setattr(_cpu_paths._onednn, "native_bfloat16", lambda: native)
    pick = lambda dtype: _cpu_paths.conv_impl("auto", (3, 3, 16, 32), 1, 8, (14, 14), dtype)
    assert pick(jnp.float32) == "onednn"
    assert (pick(jnp.bfloat16) == "onednn") == native
    assert pick(jnp.float16) != "onednn"


GLIBC = hasattr(ctypes.CDLL(None), "mallopt")
MALLOC = [runtime.MALLOC_REUSE_SETTING] if GLIBC else []


def test_configure_cpu_makes_its_settings_only_before_the_backend_starts_and_when_unset(
    monkeypatch, fresh_threading_decision
):
    assert jaxcnn.configure_cpu is runtime.configure_cpu
    monkeypatch.setattr(runtime.xla_bridge, "backends_are_initialized", lambda: False)
    for variable in (*runtime.MALLOC_VARIABLES, "GLIBC_TUNABLES"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    assert not runtime.xla_cpu_convolutions_threaded()  # read before: configure_cpu has it read again
    assert runtime.configure_cpu() == [THREADED, *MALLOC]
    assert os.environ["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {THREADED}"
    assert runtime.xla_cpu_convolutions_threaded()
    assert runtime.configure_cpu() == MALLOC  # the flag once only; mallopt's values again
    assert os.environ["XLA_FLAGS"].count("ynn_fusion_type") == 1
    monkeypatch.setenv("XLA_FLAGS", YNN_CONVOLUTIONS)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert runtime.configure_cpu() == []  # the user's choices stand
    assert os.environ["XLA_FLAGS"] == YNN_CONVOLUTIONS
    monkeypatch.delenv("XLA_FLAGS")
    monkeypatch.setattr(runtime.jaxlib.version, "__version_info__", (0, 9, 0))  # without the flag
    assert runtime.configure_cpu() == []
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setattr(runtime.jaxlib.version, "__version_info__", (0, 10, 2))
    monkeypatch.setattr(runtime.xla_bridge, "backends_are_initialized", lambda: True)
    assert runtime.configure_cpu() == []  # XLA has read the variable and started its threads already
    assert "XLA_FLAGS" not in os.environ


TEMPORARY_BUFFER_FAULTS = """
import resource
import jax, jax.numpy as jnp
x, w = jnp.ones((4096, 2048)), jnp.ones((2048, 8))
step = jax.jit(lambda x, w: jnp.sin(x) @ w + jnp.cos(x) @ w)  # sin(x), cos(x): 64 MB of temporary buffer
temporary_pages = step.lower(x, w).compile().memory_analysis().temp_size_in_bytes // 4096
for _ in range(20):  # malloc's heap grows to its working size (here in the first ~12 calls)
    jax.block_until_ready(step(x, w))
faults = []
for _ in range(11):  # the median call: the heap may still grow once, in some call, under a busy host
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(step(x, w))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(temporary_pages, sorted(faults)[5])
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt only")
def test_configure_cpu_reuses_the_temporary_buffer_of_each_call():
    """Without the malloc setting each call maps its temporary buffer afresh, one page fault per page (as
    many as `temporary_pages` here); with it the freed buffer is reused."""
    env = {k: v for k, v in os.environ.items() if k not in (*runtime.MALLOC_VARIABLES, "GLIBC_TUNABLES")}
    program = "import jaxcnn; assert jaxcnn.configure_cpu()\n" + TEMPORARY_BUFFER_FAULTS
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    temporary_pages, median_faults = map(float, done.stdout.split())
    assert temporary_pages >= 16384 and median_faults < temporary_pages / 20


def _run(program: str, xla_flags: str) -> str:
    """The standard output of `program` in a fresh process with these XLA_FLAGS."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


COMPILED_CONV = """
import jax, jax.numpy as jnp
from jaxcnn import functional as F
conv = jax.jit(lambda x, k: F.conv(x, k, padding=1, impl="xla"))
print(conv.lower(jnp.ones((32, 14, 14, 64)), jnp.ones((3, 3, 64, 64))).compile().as_text())
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "code, on_ynnpack",
    [
        ("import jaxcnn; jaxcnn.configure_cpu()", False),  # XLA's own, threaded convolution
        ("import jaxcnn", True),  # importing alone changes nothing: jaxlib's default, YNNPACK
        ("import jax; jax.devices(); import jaxcnn; jaxcnn.configure_cpu()", True),  # too late: XLA started
    ],
)
def test_configure_cpu_keeps_convolutions_off_ynnpack(code, on_ynnpack):
    hlo = _run(code + COMPILED_CONV, xla_flags="")
    assert ("__ynn_fusion" in hlo) == on_ynnpack
    assert "convolution(" in hlo


IMPORT_EVERYTHING = """
import importlib, json, os, pkgutil
environment = dict(os.environ)
import jax
from jax._src import xla_bridge
settings = {name: repr(value) for name, value in jax.config.values.items()}
import jaxcnn
# Every module, as API doc generators and import checkers find them (the C library among them too, were it
# named as an extension module; __main__, were it to run the CLI on import).
names = sorted(m.name for m in pkgutil.walk_packages(jaxcnn.__path__, "jaxcnn."))
for name in names:
    importlib.import_module(name)
changed = {k for k in environment.keys() | os.environ.keys() if environment.get(k) != os.environ.get(k)}
changed |= {name for name, value in jax.config.values.items() if repr(value) != settings.get(name)}
started = xla_bridge.backends_are_initialized()
print(json.dumps({"modules": names, "changed": sorted(changed), "backend": started}))
"""


@pytest.mark.slow
def test_every_module_imports_and_changes_no_environment_variable_or_jax_setting():
    """Every module `pkgutil.walk_packages` finds in jaxcnn imports, and importing them all changes
    nothing and does not start JAX's backend (which would make `configure_cpu` too late)."""
    result = json.loads(_run(IMPORT_EVERYTHING, xla_flags="").splitlines()[-1])
    assert {"jaxcnn.__main__", "jaxcnn.functional._onednn", "jaxcnn.models.bridge", "jaxcnn.runtime"} <= set(
        result["modules"]
    )
    assert result["changed"] == [] and not result["backend"]


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (4, 7, 2), (3, 2, 2, 2, 4)])
def test_batch_norm_on_matrix_products_equals_plain_reductions_in_values_and_both_derivatives(shape):
    """`batch_moments` and `batch_norm` sum over the leading axes by `_cpu_paths.channel_sum` (and broadcast
    by `broadcast_channels`, whose transpose is one) on CPU: the same function as jnp's reductions."""
    rng = np.random.default_rng(len(shape))
    x, tangent, cotangent = (jnp.asarray(rng.standard_normal(shape) * 3 + 1, jnp.float32) for _ in range(3))
    scale, bias = (jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32) for _ in range(2))
    axes = tuple(range(len(shape) - 1))

    def plain(x, scale, bias):
        mean = x.mean(axes)
        var = jnp.maximum(jnp.square(x).mean(axes) - jnp.square(mean), 0.0)
        return (x - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias

    def ours(x, scale, bias):
        return F.batch_norm(x, *F.batch_moments(x), scale, bias)

    gradients = jax.jit(lambda *args: jax.vjp(ours, *args)[1](cotangent)).lower(x, scale, bias).as_text()
    assert "stablehlo.dot_general" in gradients and "stablehlo.reduce" not in gradients
    tangents = (tangent, scale[::-1], bias * 2)
    for function in (ours, jax.jit(ours)):
        pairs = [
            (function(x, scale, bias), plain(x, scale, bias)),
            *zip(
                jax.vjp(function, x, scale, bias)[1](cotangent), jax.vjp(plain, x, scale, bias)[1](cotangent)
            ),
            (jax.jvp(function, (x, scale, bias), tangents)[1], jax.jvp(plain, (x, scale, bias), tangents)[1]),
        ]
        for actual, expected in pairs:
            assert_close(actual, expected, rtol=2e-5)
