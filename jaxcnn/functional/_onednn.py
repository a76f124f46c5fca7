"""oneDNN's CPU convolutions inside jitted programs: a JAX primitive lowered to an XLA FFI call.

A convolution relates three arrays: the input `x` `(N, *spatial, C)`, the kernel `w`
`(*window, C // groups, O)` and the output `y` `(N, *out_spatial, O)`. The primitive `onednn_conv`
computes one of them from the other two (`computes="y"`: the forward convolution; `"x"`: the input
gradient from `w` and a cotangent `y`; `"w"`: the kernel gradient from `x` and `y`), each bilinear in its
two operands. The transpose of one is another (`ad.defbilinear`), so reverse mode runs oneDNN's
backward-data and backward-weights primitives, and forward mode, second derivatives and `jax.jvp` of
gradients stay within the three. `vmap` folds a mapped axis into the batch, the channels or the groups
(no loop). On CPU the primitive is a call into the C++ handler `csrc/onednn_conv.cc` (built by
`pip install` as the C library `csrc/libjaxcnn_onednn.so`, linked to the `onednn-cpu-gomp` wheel); on
every other platform it lowers to XLA's convolution, so a program traced here also runs on GPU/TPU.

Importing this module defines the primitive and registers its rules with JAX (abstract evaluation,
transposes, batching, the lowerings), as any JAX primitive does; it loads no library and changes no
setting. oneDNN and the handler are loaded and the FFI target registered by `available()`, at the first
convolution that could use them; when that fails, one log line says why and jaxcnn keeps XLA's paths.
`JAXCNN_ONEDNN=0` (read then) switches it off, e.g. to run the tests without it.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import logging
import math
import os
import platform
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import dispatch
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxcnn.functional._args import Pairs
from jaxcnn.functional._xla_conv import xla_conv

TARGET = "jaxcnn_onednn_conv"
HANDLER = Path(__file__).with_name("csrc") / "libjaxcnn_onednn.so"  # built by setup.py from onednn_conv.cc
LIBRARY = ("onednn-cpu-gomp", "libdnnl.so.3")  # the wheel and the file it installs
SLOTS = ("x", "w", "y")  # a convolution's arrays, in the order operands are passed

logger = logging.getLogger(__name__)


@functools.cache
def available() -> bool:
    """Whether convolutions can run on oneDNN here: loads the library and registers the FFI target once.

    Logs one line with the reason when they cannot.
    """
    reason = _load()
    if reason is not None:
        logger.warning("jaxcnn: CPU convolutions on XLA, not oneDNN: %s", reason)
    return reason is None


@functools.cache
def native_bfloat16() -> bool:
    """Whether this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX-BF16, as Linux names them), which
    oneDNN's bfloat16 convolutions run on; without it oneDNN would emulate them, slower than float32."""
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpu) is not None


def _load() -> str | None:
    """Loads oneDNN and the handler and registers it with XLA; the reason it could not, else None."""
    if os.environ.get("JAXCNN_ONEDNN", "1").strip() == "0":
        return "JAXCNN_ONEDNN=0"
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return f"the oneDNN wheel is for Linux on x86-64, this is {platform.system()} on {platform.machine()}"
    if not HANDLER.exists():
        return (
            "the extension was not built when jaxcnn was installed (it needs a C++ compiler; "
            "`pip install -v -e .` shows why the build failed)"
        )
    try:
        dist = importlib.metadata.distribution(LIBRARY[0])
    except importlib.metadata.PackageNotFoundError:
        return f"the {LIBRARY[0]} package is not installed"
    paths = [dist.locate_file(f) for f in dist.files or () if Path(str(f)).name == LIBRARY[1]]
    if not paths:
        return f"{LIBRARY[1]} is missing from the {LIBRARY[0]} package"
    try:
        # The handler links to libdnnl.so.3 by name; loaded first by path, it is found by that name.
        ctypes.CDLL(str(paths[0]))
        handler = ctypes.CDLL(str(HANDLER)).JaxcnnOnednnConvolution
    except OSError as error:
        return f"loading failed: {error}"
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
    return None


def conv(
    x: jax.Array,
    w: jax.Array,
    stride: Sequence[int],
    pads: Pairs,
    dilation: Sequence[int],
    groups: int,
    out_sizes: Sequence[int],
) -> jax.Array:
    """The forward convolution `(N, *spatial, C)`, `(*window, C // groups, O)` -> `(N, *out_sizes, O)`."""
    shape = (x.shape[0], *out_sizes, w.shape[-1])
    y: jax.Array = onednn_conv_p.bind(
        x, w, computes="y", shape=shape, stride=stride, padding=pads, dilation=dilation, groups=groups
    )
    return y


def _operand_slots(computes: str) -> tuple[str, str]:
    a, b = (s for s in SLOTS if s != computes)
    return a, b


onednn_conv_p = Primitive("onednn_conv")
onednn_conv_p.def_impl(functools.partial(dispatch.apply_primitive, onednn_conv_p))


def _abstract_eval(
    a: jax.core.ShapedArray,
    b: jax.core.ShapedArray,
    *,
    computes: str,
    shape: tuple[int, ...],
    **geometry: Any,
) -> jax.core.ShapedArray:
    return jax.core.ShapedArray(shape, jnp.result_type(a.dtype, b.dtype))


onednn_conv_p.def_abstract_eval(_abstract_eval)


def _transpose(
    position: int,
    cotangent: jax.Array,
    a: Any,
    b: Any,
    *,
    computes: str,
    shape: tuple[int, ...],
    **geometry: Any,
) -> jax.Array:
    """The operand at `position` (being differentiated), computed from the other and the cotangent."""
    arrays = dict(zip(_operand_slots(computes), (a, b)))
    wanted = _operand_slots(computes)[position]
    wanted_shape = arrays.pop(wanted).aval.shape
    arrays[computes] = cotangent
    operands = [arrays[slot] for slot in _operand_slots(wanted)]
    result: jax.Array = onednn_conv_p.bind(*operands, computes=wanted, shape=wanted_shape, **geometry)
    return result


ad.defbilinear(onednn_conv_p, functools.partial(_transpose, 0), functools.partial(_transpose, 1))


# How `vmap` folds a mapped axis into each array, by which arrays are mapped: per array the axis it joins
# and how many outer blocks that axis has (the groups where channels are group-major), the mapped axis
# going between the blocks and the rest. Both operands mapped: one group per mapped index. One: the batch
# when it is x or y and x or y is computed, else the channel axis it shares with the result.
def _fold_plan(mapped: str, computes: str, groups: int) -> tuple[dict[str, tuple[int, int]], bool]:
    if len(mapped) == 2:
        return {"x": (-1, 1), "w": (-1, 1), "y": (-1, 1)}, True
    if {mapped, computes} == {"x", "y"}:
        return {"x": (0, 1), "y": (0, 1)}, False
    if "x" in (mapped, computes):  # the input channels, shared by x and w
        return {"x": (-1, groups), "w": (-2, 1)}, False
    return {"y": (-1, groups), "w": (-1, groups)}, False  # the output channels, shared by w and y


def _fold(a: jax.Array, axis: int, outer: int) -> jax.Array:
    """`(B, *dims)` -> `dims` with B merged into `dims[axis]` as (outer, B, dims[axis] // outer)."""
    size, dims = a.shape[0], list(a.shape[1:])
    axis %= len(dims)
    split = a.reshape(size, *dims[:axis], outer, dims[axis] // outer, *dims[axis + 1 :])
    dims[axis] *= size
    return jnp.moveaxis(split, 0, axis + 1).reshape(dims)


def _unfold(a: jax.Array, axis: int, outer: int, size: int) -> jax.Array:
    """The inverse of `_fold`: B back out of `a.shape[axis]` to the front."""
    dims = list(a.shape)
    axis %= len(dims)
    split = a.reshape(*dims[:axis], outer, size, dims[axis] // (outer * size), *dims[axis + 1 :])
    dims[axis] //= size
    return jnp.moveaxis(split, axis + 1, 0).reshape(size, *dims)


def _batch(
    args: Sequence[jax.Array],
    dims: Sequence[int | None],
    *,
    computes: str,
    shape: tuple[int, ...],
    groups: int,
    **geometry: Any,
) -> tuple[jax.Array, int]:
    slots = _operand_slots(computes)
    mapped = "".join(s for s, d in zip(slots, dims) if d is not None)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    plan, into_groups = _fold_plan(mapped, computes, groups)
    operands = [
        a if d is None else _fold(jnp.moveaxis(a, d, 0), *plan[s]) for s, a, d in zip(slots, args, dims)
    ]
    axis, outer = plan[computes]
    folded = list(shape)
    folded[axis] *= size
    y = onednn_conv_p.bind(
        *operands,
        computes=computes,
        shape=tuple(folded),
        groups=groups * size if into_groups else groups,
        **geometry,
    )
    return _unfold(y, axis, outer, size), 0


batching.primitive_batchers[onednn_conv_p] = _batch


def _xla(
    a: jax.Array,
    b: jax.Array,
    *,
    computes: str,
    shape: tuple[int, ...],
    stride: tuple[int, ...],
    padding: Pairs,
    dilation: tuple[int, ...],
    groups: int,
) -> jax.Array:
    """The same array computed by XLA's convolution and its transposes (every platform but CPU)."""
    forward: Callable[[jax.Array, jax.Array], jax.Array]
    forward = lambda x, w: xla_conv(x, w, stride, padding, dilation, groups, None)
    if computes == "y":
        return forward(a, b)
    known, cotangent = a, b  # x is computed from (w, y), w from (x, y)
    linear: Callable[[jax.Array], jax.Array]
    linear = (lambda x: forward(x, known)) if computes == "x" else (lambda w: forward(known, w))
    result: jax.Array  # linear_transpose's function returns a tuple of Any
    (result,) = jax.linear_transpose(linear, jax.ShapeDtypeStruct(shape, cotangent.dtype))(cotangent)
    return result


class _Call(NamedTuple):
    """The primitive's parameters, hashable (the static argument of `custom_partitioning`)."""

    computes: str
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int


def _ffi_call(a: jax.Array, b: jax.Array, call: _Call) -> jax.Array:
    """The handler on (local) operands."""
    low, high = zip(*call.padding)
    as_attr: Callable[[Sequence[int]], np.ndarray[Any, np.dtype[np.int64]]]
    as_attr = lambda values: np.asarray(values, np.int64)
    y: jax.Array = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct(call.shape, a.dtype))(
        a,
        b,
        computes=call.computes,
        stride=as_attr(call.stride),
        pad_lo=as_attr(low),
        pad_hi=as_attr(high),
        dilation=as_attr(call.dilation),
        groups=np.int64(call.groups),
    )
    return y


# XLA's partitioner cannot split a custom call it does not know: it would gather a batch-sharded input
# onto every device and convolve the whole batch on each. `custom_partitioning` splits the call by the
# batch instead: x and y sharded along N as the operand comes, w replicated; the kernel gradient, a sum
# over N, is summed across the shards.
_sharded_ffi_call = custom_partitioning(_ffi_call, static_argnums=(2,))


def _batch_axes(call: _Call, mesh: Mesh, arg_shapes: Sequence[jax.ShapeDtypeStruct]) -> Any:
    """The mesh axes that shard the batch of the operand x or y (None: unsplit)."""
    slots = _operand_slots(call.computes)
    shape = arg_shapes[slots.index("y" if call.computes == "x" else "x")]
    spec: tuple[Any, ...] = getattr(shape.sharding, "spec", ())  # a sharding without a mesh: run unsplit
    axes = spec[0] if len(spec) else None
    shards = math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes or ()))
    return axes if shape.shape[0] % shards == 0 else None  # an uneven split would pad the batch


def _shardings(call: _Call, mesh: Mesh, axes: Any) -> tuple[NamedSharding, tuple[NamedSharding, ...]]:
    """The result's and the operands' shardings: x and y split along the batch by `axes`, w whole."""
    sharding: Callable[[str], NamedSharding]
    sharding = lambda slot: NamedSharding(mesh, P() if slot == "w" else P(axes))
    return sharding(call.computes), tuple(map(sharding, _operand_slots(call.computes)))


def _partition(
    call: _Call, mesh: Mesh, arg_shapes: Sequence[jax.ShapeDtypeStruct], result_shape: jax.ShapeDtypeStruct
) -> tuple[Any, ...]:
    axes = _batch_axes(call, mesh, arg_shapes)

    def local(a: jax.Array, b: jax.Array) -> jax.Array:
        if call.computes == "w":
            w = _ffi_call(a, b, call)
            return w if axes is None else jax.lax.psum(w, axes)
        batch = (a if call.computes == "y" else b).shape[0]  # of x (computing y) or y (computing x)
        return _ffi_call(a, b, call._replace(shape=(batch, *call.shape[1:])))

    return (mesh, local, *_shardings(call, mesh, axes))


def _infer_sharding(
    call: _Call, mesh: Mesh, arg_shapes: Sequence[jax.ShapeDtypeStruct], result_shape: jax.ShapeDtypeStruct
) -> NamedSharding:
    return _shardings(call, mesh, _batch_axes(call, mesh, arg_shapes))[0]


def _sharding_rule(
    call: _Call, mesh: Mesh, operand_types: Any, result_types: Any
) -> tuple[str, dict[str, tuple[str, ...]]]:
    """Shardy's rule: x and y share the batch factor n (w's gradient sums over it), the rest stays whole."""
    rank = len(call.stride) + 2
    factors = {
        "x": ["n", *(f"x{i}" for i in range(rank - 1))],
        "w": [f"w{i}" for i in range(rank)],
        "y": ["n", *(f"y{i}" for i in range(rank - 1))],
    }
    operands = _operand_slots(call.computes)
    rule = f"{', '.join(' '.join(factors[s]) for s in operands)} -> {' '.join(factors[call.computes])}"
    whole = tuple(f for s in (*operands, call.computes) for f in factors[s] if f != "n")  # in rule order
    reduced = ("n",) if call.computes == "w" else ()
    return rule, {"need_replication_factors": whole, "reduction_factors": reduced}


_sharded_ffi_call.def_partition(
    _partition, infer_sharding_from_operands=_infer_sharding, sharding_rule=_sharding_rule
)


def _cpu_lowering(ctx: mlir.LoweringRuleContext, a: Any, b: Any, **params: Any) -> Any:
    if not available():
        raise RuntimeError("onednn_conv needs jaxcnn's oneDNN extension, which is unavailable (see the log)")
    lowered: Callable[[Any, Any], Any]
    lowered = lambda a, b: _sharded_ffi_call(a, b, _Call(**params))
    return mlir.lower_fun(lowered, multiple_results=False)(ctx, a, b)


dispatch.prim_requires_devices_during_lowering.add(onednn_conv_p)  # custom_partitioning needs the mesh
mlir.register_lowering(onednn_conv_p, mlir.lower_fun(_xla, multiple_results=False))
mlir.register_lowering(onednn_conv_p, _cpu_lowering, platform="cpu")
