"""A per-layer table of a model: shapes, parameters, FLOPs, and the arithmetic behind each.

    >>> print(jaxcnn.summary(jaxcnn.models.create("lenet5"), (28, 28, 1)))

Nothing is computed: the model is traced with `jax.eval_shape`, and every call of a layer is
recorded: `jaxcnn.nnx_layers` through `jaxcnn.nnx_layers.observe_calls`, Linen modules through
`flax.linen.intercept_methods`. The zoo's models (`models.create_nnx`, or their Linen form
`models.create`) are tabulated as the NNX models they are.

Conventions:
  - Shapes are per example (batch size 1; the batch dim is left out of the table).
  - FLOPs count 2 per multiply-accumulate of convolutions and dense layers, per example:
    a convolution `2 * prod(window) * (C_in / groups) * C_out * prod(out_spatial)`, a dense layer
    `2 * D_in * D_out` (per output position). Bias additions, BatchNorm, activations and pooling
    are not counted (they are well under 1% in these nets). torchvision's tables list
    multiply-accumulates (under the name "GFLOPS"), so half of these numbers.
  - Parameters are the `params` collection (NNX: `nnx.Param`); BatchNorm's running statistics
    (`batch_stats`, `nnx.BatchStat`) are counted apart, as state. The totals are those of the whole
    model, so they include parameters of modules that are not jaxcnn layers too (Linen rows show their
    FLOPs as unknown, "?"; NNX rows cover jaxcnn's layers only).
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx, traverse_util

from jaxcnn import functional as F
from jaxcnn import layers, nnx_layers
from jaxcnn._validate import int_tuple, shape
from jaxcnn.functional import _args
from jaxcnn.functional import padding as padding_lib
from jaxcnn.models.bridge import LinenModel


def _layer_classes(module, base) -> dict[type, str]:
    return {
        obj: name
        for name, obj in vars(module).items()
        if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__
    }


# jaxcnn's layers of both APIs, by kind: `jaxcnn.layers.Conv` and `jaxcnn.nnx_layers.Conv` are both "Conv".
_KINDS = {**_layer_classes(layers, nn.Module), **_layer_classes(nnx_layers, nnx.Module)}
_DIM_NAMES = {1: ("W",), 2: ("H", "W"), 3: ("D", "H", "W")}


@dataclasses.dataclass(frozen=True)
class Row:
    """One call of a layer.

    Attributes:
      path: the module's path in the model, e.g. `"layer1_0/conv1"`.
      kind: its class name, e.g. `"Conv"`.
      input_shape, output_shape: per example (no batch dim).
      params: parameters the layer holds (0 on a second call of a shared layer).
      flops: 2 per multiply-accumulate (see the module docstring); None when unknown.
      size_formula: how the output's spatial size follows from the input's, e.g.
        `"H2 = W2 = (28 − 5 + 2·2)/1 + 1 = 28"`; empty for layers that keep or drop the grid.
      params_formula: how the parameter count follows from the shapes, e.g. `"(5·5·1)·6 + 6 = 156"`.
    """

    path: str
    kind: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    params: int
    flops: int | None
    size_formula: str = ""
    params_formula: str = ""


@dataclasses.dataclass(frozen=True)
class Summary:
    """What `summary` returns: `rows` (one `Row` per layer call) and totals; `str()` renders a
    text table, notebooks show an HTML one."""

    model: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    rows: tuple[Row, ...]
    total_params: int
    total_state: int
    total_flops: int

    def _table(self) -> tuple[list[str], list[list[str]]]:
        header = ["Layer", "Kind", "Input → Output", "Params", "FLOPs", "Derivation"]
        body = [
            [
                row.path,
                row.kind,
                f"{_dims(row.input_shape)} → {_dims(row.output_shape)}",
                f"{row.params:,}",
                "?" if row.flops is None else f"{row.flops:,}",
                "; ".join(f for f in (row.size_formula, row.params_formula) if f),
            ]
            for row in self.rows
        ]
        return header, body

    def _title(self) -> str:
        return f"{self.model} on {_dims(self.input_shape)} inputs → {_dims(self.output_shape)} (per example)"

    def _footer(self) -> str:
        state = f" (+ {self.total_state:,} state: BatchNorm statistics)" if self.total_state else ""
        return (
            f"Total: {self.total_params:,} parameters{state}, {self.total_flops:,} FLOPs "
            f"({_si(self.total_flops)}FLOPs; 2 per multiply-accumulate of conv and dense layers)"
        )

    def __str__(self) -> str:
        header, body = self._table()
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        right = {3, 4}  # numbers
        render = lambda line: "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        rule = "─" * len(render(header))
        return "\n".join(
            [self._title(), rule, render(header), rule, *map(render, body), rule, self._footer()]
        )

    __repr__ = __str__

    def _repr_html_(self) -> str:
        header, body = self._table()
        cell = lambda tag, text, i: (
            f'<{tag} style="text-align:{"right" if i in (3, 4) else "left"}">{html.escape(text)}</{tag}>'
        )
        rows = "".join(
            "<tr>" + "".join(cell("td", c, i) for i, c in enumerate(line)) + "</tr>" for line in body
        )
        return (
            f"<p><b>{html.escape(self._title())}</b></p><table><thead><tr>"
            + "".join(cell("th", c, i) for i, c in enumerate(header))
            + f"</tr></thead><tbody>{rows}</tbody></table><p>{html.escape(self._footer())}</p>"
        )


def _dims(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) if shape else "scalar"


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g} "


def _count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _size_formula(
    size: int, window: int, stride: int, pads: tuple[int, int], dilation: int, ceil_mode: bool = False
) -> str:
    """`(W − F + 2·P)/S + 1 = W2` with the numbers filled in: floor brackets when the stride does
    not divide (ceiling ones with `ceil_mode`), `D·(F − 1) + 1` for the dilated window, `+ P_lo + P_hi`
    for asymmetric padding."""
    lo, hi = pads
    out = F.conv_output_size(size, window, stride, pads, dilation, ceil_mode=ceil_mode)
    span = f"{window}" if dilation == 1 else f"({dilation}·({window} − 1) + 1)"
    padding = "" if lo == hi == 0 else f" + 2·{lo}" if lo == hi else f" + {lo} + {hi}"
    numerator = f"({size} − {span}{padding})/{stride}"
    exact = (size + lo + hi - dilation * (window - 1) - 1) % stride == 0
    rounded = numerator if exact else f"⌈{numerator}⌉" if ceil_mode else f"⌊{numerator}⌋"
    return f"{rounded} + 1 = {out}"


def _transposed_size_formula(
    size: int, window: int, stride: int, pads: tuple[int, int], dilation: int, extra: int
) -> str:
    """`(W1 − 1)·S − 2·P + D·(F − 1) + output_padding + 1 = W2` with the numbers filled in."""
    lo, hi = pads
    padding = "" if lo == hi == 0 else f" − 2·{lo}" if lo == hi else f" − {lo} − {hi}"
    span = f"({window} − 1)" if dilation == 1 else f"{dilation}·({window} − 1)"
    out = (size - 1) * stride - lo - hi + dilation * (window - 1) + extra + 1
    return f"({size} − 1)·{stride}{padding} + {span}{f' + {extra}' if extra else ''} + 1 = {out}"


def _join_dims(formulas: Sequence[str]) -> str:
    """`H2 = W2 = ...` when every spatial dim has the same derivation, else one per dim."""
    names = _DIM_NAMES[len(formulas)]
    if len(set(formulas)) == 1:
        return " = ".join(f"{n}2" for n in names) + f" = {formulas[0]}"
    return ", ".join(f"{n}2 = {f}" for n, f in zip(names, formulas))


def _windowed_formulas(layer, kind: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...]):
    """Size formula, FLOPs and params formula of a convolution or pooling layer."""
    sizes, ndim = in_shape[1:-1], len(in_shape) - 2
    convolution = kind in ("Conv", "ConvTranspose", "ConvLocal")
    window = int_tuple(layer.kernel_size if convolution else layer.window, ndim, "window")
    stride = window if not convolution and layer.stride is None else int_tuple(layer.stride, ndim, "stride")
    dilation = int_tuple(getattr(layer, "dilation", 1), ndim, "dilation")  # AvgPool has none
    if kind == "ConvTranspose":
        return _transposed_formulas(layer, in_shape, out_shape, window, stride, dilation)
    ceil_mode = getattr(layer, "ceil_mode", False)  # pooling only
    pads, _ = padding_lib.conv_pads(layer.padding, "zeros", sizes, window, stride, dilation)
    size_formula = _join_dims(
        [_size_formula(*dims, ceil_mode) for dims in zip(sizes, window, stride, pads, dilation)]
    )
    c_in, c_out = in_shape[-1], out_shape[-1]
    if kind == "ConvLocal":  # one kernel per output cell: the count is in the params column
        return size_formula, 2 * math.prod(window) * c_in * c_out * math.prod(out_shape[1:-1]), ""
    if kind != "Conv":
        return size_formula, 0, ""
    groups = layer.groups
    expected = F.conv_param_count(window, c_in, c_out, groups=groups, use_bias=layer.use_bias)
    per_filter = "·".join(map(str, window)) + "·" + (f"{c_in}/{groups}" if groups > 1 else f"{c_in}")
    bias = f" + {c_out}" if layer.use_bias else ""
    params_formula = f"({per_filter})·{c_out}{bias} = {expected:,}"
    flops = 2 * math.prod(window) * (c_in // groups) * c_out * math.prod(out_shape[1:-1])
    return size_formula, flops, params_formula


def _transposed_formulas(layer, in_shape, out_shape, window, stride, dilation):
    """Size formula, FLOPs and params formula of a transposed convolution: each input cell adds its
    window into the output, so the multiply-adds are those of the convolution it transposes."""
    sizes, ndim = in_shape[1:-1], len(in_shape) - 2
    c_in, c_out, groups = in_shape[-1], out_shape[-1], layer.groups
    extra = int_tuple(layer.output_padding, ndim, "output_padding", minimum=0)
    if isinstance(layer.padding, str):  # Flax's strings: the output size is the formula's result
        size_formula = _join_dims(
            [f"{out} ({layer.padding} from {size})" for size, out in zip(sizes, out_shape[1:-1])]
        )
    else:
        pads = _args.padding_pairs(layer.padding, out_shape[1:-1], window, stride, dilation)
        size_formula = _join_dims(
            [_transposed_size_formula(*dims) for dims in zip(sizes, window, stride, pads, dilation, extra)]
        )
    expected = F.conv_param_count(window, c_out, c_in, groups=groups, use_bias=False)
    expected += c_out if layer.use_bias else 0
    per_filter = "·".join(map(str, window)) + "·" + (f"{c_out}/{groups}" if groups > 1 else f"{c_out}")
    bias = f" + {c_out}" if layer.use_bias else ""
    params_formula = f"({per_filter})·{c_in}{bias} = {expected:,}"
    flops = 2 * math.prod(window) * (c_out // groups) * c_in * math.prod(sizes)
    return size_formula, flops, params_formula


def _describe(layer, kind: str | None, in_shape: tuple[int, ...], out_shape: tuple[int, ...], params: int):
    """(size formula, FLOPs, params formula) of one call of a layer; shapes with the batch dim."""
    if kind in ("Conv", "ConvTranspose", "ConvLocal", "MaxPool", "MinPool", "AvgPool"):
        return _windowed_formulas(layer, kind, in_shape, out_shape)
    if kind == "Dense":
        d_in, d_out = in_shape[-1], out_shape[-1]
        formula = f"{d_in}·{d_out}{f' + {d_out}' if layer.use_bias else ''} = {params:,}"
        return "", 2 * d_in * d_out * math.prod(out_shape[1:-1]), formula
    if kind in ("AdaptiveAvgPool", "AdaptiveMaxPool"):
        formulas = [
            f"{out} (adaptive from {size}: bin i covers ⌊i·{size}/{out}⌋ … ⌈(i+1)·{size}/{out}⌉ − 1)"
            for size, out in zip(in_shape[1:-1], out_shape[1:-1])
        ]
        return _join_dims(formulas), 0, ""
    if kind in ("GlobalAvgPool", "GlobalMaxPool"):
        reduce = "mean" if kind == "GlobalAvgPool" else "max"
        return f"{reduce} over {_dims(in_shape[1:-1])}", 0, ""
    if kind == "Flatten":
        return f"{'·'.join(map(str, in_shape[1:]))} = {out_shape[-1]:,}", 0, ""
    if kind in ("BatchNorm", "LayerNorm"):  # scale and bias (and BatchNorm's statistics: state)
        vectors = params // out_shape[-1]
        return "", 0, f"{vectors}·{out_shape[-1]} = {params:,}" if params else ""
    if kind is not None:  # Dropout, DropPath: no parameters, no multiply-adds
        return "", 0, ""
    return "", None, ""  # a module from elsewhere (e.g. flax.linen.Conv): FLOPs unknown


def _shape(tree) -> tuple[int, ...]:
    """The shape of an array, or of the first array in a tree of them."""
    leaves = jax.tree.leaves(tree)
    return tuple(getattr(leaves[0], "shape", ())) if leaves else ()


@dataclasses.dataclass(frozen=True)
class _Call:
    """One recorded layer call: the layer, its path in the model, its kind, its own parameter count,
    and the shapes of its input and output (batch dim included)."""

    layer: Any
    path: tuple[str, ...]
    kind: str | None
    params: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def _nnx_calls(model: nnx.Module, x: jax.ShapeDtypeStruct):
    """`(output, calls, params, state)` of an NNX model in eval mode, traced on `x`."""
    graphdef, variables = nnx.split(model)
    calls = []

    def run(variables, x):
        module = nnx.merge(graphdef, variables)
        module.eval()
        paths = {id(m): tuple(map(str, path)) for path, m in nnx.iter_graph(module)}

        def record(layer, inputs, outputs):
            own = _count(nnx.state(layer, nnx.Param))
            path = paths.get(id(layer), (type(layer).__name__,))
            calls.append(_Call(layer, path, _KINDS[type(layer)], own, _shape(inputs), _shape(outputs)))

        with nnx_layers.observe_calls(record):
            return module(x)

    out = jax.eval_shape(run, variables, x)
    return out, calls, nnx.state(model, nnx.Param), nnx.state(model, nnx.BatchStat)


def _linen_calls(model: nn.Module, x: jax.ShapeDtypeStruct, rngs, kwargs):
    """`(output, calls, params, state)` of a Linen model's `init`, traced on `x`."""
    recorded = []

    def record(next_fun, args, call_kwargs, context):
        out = next_fun(*args, **call_kwargs)
        if context.method_name == "__call__" and args:
            recorded.append((context.module, _shape(args[0]), _shape(out)))
        return out

    def init(x):
        with nn.intercept_methods(record):
            return model.init_with_output(rngs, x, **kwargs)

    out, variables = jax.eval_shape(init, x)
    variables = nn.unbox(variables)
    direct: dict[tuple[str, ...], int] = {}  # module path -> parameters held directly (not by submodules)
    for path, leaf in traverse_util.flatten_dict(variables.get("params", {})).items():
        direct[path[:-1]] = direct.get(path[:-1], 0) + math.prod(leaf.shape)
    calls = []
    for module, in_shape, out_shape in recorded:
        path, kind = tuple(module.path), _KINDS.get(type(module))
        if kind is None and path not in direct:
            continue  # a container: its layers have rows of their own
        calls.append(_Call(module, path, kind, direct.get(path, 0), in_shape, out_shape))
    params = variables.get("params", {})
    return out, calls, params, {k: v for k, v in variables.items() if k != "params"}


def summary(
    model: nnx.Module | nn.Module,
    input_shape: Sequence[int],
    *,
    dtype: Any = jnp.float32,
    rngs: dict[str, jax.Array] | None = None,
    **kwargs: Any,
) -> Summary:
    """Summarises `model` on inputs of `input_shape` (one example, no batch dim), e.g. (28, 28, 1).

    Args:
      model: a Flax NNX module (in eval mode; its rows are its `jaxcnn.nnx_layers` calls) or a Flax
        Linen module (rows for its `jaxcnn.layers` modules and any other module that holds parameters
        directly; a zoo model from `models.create` is tabulated as its NNX model).
      input_shape: the shape of one example; the batch dim (1) is added.
      dtype: the input's dtype.
      rngs: for a Linen model's `init`; default `params` and `dropout` keys.
      **kwargs: passed to a Linen model's call, e.g. `train=True`. Neither `rngs` nor `kwargs` is taken
        for an NNX model (a TypeError says so).

    Returns:
      A `Summary`: `rows`, `total_params`, `total_state`, `total_flops`; `print` it for a table.
    """
    input_shape = shape(input_shape, "input_shape (one example, without the batch dim)")
    x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
    if isinstance(model, LinenModel):
        model = model.abstract_nnx_model(input_shape)
    if isinstance(model, nnx.Module):
        if kwargs or rngs is not None:  # they would change nothing: say so rather than ignore them
            given = ", ".join(sorted([*kwargs, *(["rngs"] if rngs is not None else [])]))
            raise TypeError(
                f"summary passes rngs and **kwargs ({given}) to a Linen model's init; "
                f"{type(model).__name__} is tabulated as an NNX model, in eval mode"
            )
        out, calls, params, state = _nnx_calls(model, x)
    elif isinstance(model, nn.Module):
        key = jax.random.PRNGKey(0)
        out, calls, params, state = _linen_calls(model, x, rngs or {"params": key, "dropout": key}, kwargs)
    else:
        raise TypeError(f"model must be a flax.nnx.Module or a flax.linen.Module, got {type(model).__name__}")
    rows, seen = [], set()
    for call in calls:
        shared = call.path in seen
        seen.add(call.path)
        size_formula, flops, params_formula = _describe(
            call.layer, call.kind, call.in_shape, call.out_shape, call.params
        )
        if shared and params_formula:
            params_formula = "shared: counted at its first call"
        rows.append(
            Row(
                "/".join(call.path),
                call.kind or type(call.layer).__name__,
                call.in_shape[1:],
                call.out_shape[1:],
                0 if shared else call.params,
                flops,
                size_formula,
                params_formula,
            )
        )
    return Summary(
        model=type(model).__name__,
        input_shape=input_shape,
        output_shape=_shape(out)[1:],
        rows=tuple(rows),
        total_params=_count(params),
        total_state=_count(state),
        total_flops=sum(row.flops or 0 for row in rows),
    )
