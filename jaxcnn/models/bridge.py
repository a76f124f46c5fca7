"""One architecture, two APIs: zoo models are written in Flax NNX, and used from Flax Linen through here.

    model = LinenModel(ResNet, {"stage_sizes": (2, 2, 2, 2), "block": BasicBlock})  # what create() returns
    variables = model.init(key, images)                       # {"params": ..., "batch_stats": ...}
    logits = model.apply(variables, images, train=False)

The Linen variables are the NNX model's state, path for path: `params` holds its `nnx.Param`s and
`batch_stats` its `nnx.BatchStat`s, so `linen_variables(nnx_model)` and `load_linen_variables(nnx_model,
variables)` move weights between the two forms unchanged (checkpoints and converted torchvision weights
serve both).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import FrozenDict

from jaxcnn import nnx_layers

COLLECTIONS = {"params": nnx.Param, "batch_stats": nnx.BatchStat}


def linen_variables(model: nnx.Module) -> dict[str, Any]:
    """`{"params": ..., "batch_stats": ...}` (no `batch_stats` without BatchNorm) of an NNX model: the
    variables its Linen form (`LinenModel`) takes."""
    variables = {name: nnx.to_pure_dict(nnx.state(model, kind)) for name, kind in COLLECTIONS.items()}
    return {name: tree for name, tree in variables.items() if tree or name == "params"}


def _flat_shapes(tree) -> dict[str, tuple[int, ...]]:
    leaves = jax.tree.leaves_with_path(tree)
    return {jax.tree_util.keystr(path): tuple(jnp.shape(leaf)) for path, leaf in leaves}


def load_linen_variables(model: nnx.Module, variables: Mapping[str, Any]) -> nnx.Module:
    """Sets an NNX model's parameters and BatchNorm statistics from Linen `variables` and returns it.

    Raises:
      ValueError: a missing or unexpected collection, path or shape (all of them listed); nothing is
        loaded then.
    """
    problems = [f"unexpected collection {name!r}" for name in variables if name not in COLLECTIONS]
    for name, kind in COLLECTIONS.items():
        expected = _flat_shapes(nnx.to_pure_dict(nnx.state(model, kind)))
        given = _flat_shapes(variables.get(name, {}))
        problems += [f"{name}{path}: missing" for path in expected.keys() - given.keys()]
        problems += [f"{name}{path}: unexpected" for path in given.keys() - expected.keys()]
        problems += [
            f"{name}{path}: shape {given[path]}, expected {shape}"
            for path, shape in expected.items()
            if path in given and given[path] != shape
        ]
    if problems:
        raise ValueError(f"variables do not fit {type(model).__name__}: " + "; ".join(sorted(problems)))
    for name in COLLECTIONS:
        if variables.get(name):
            nnx.update(model, variables[name])
    return model


def _abstract_model(nnx_class: Callable, kwargs: FrozenDict, input_shape: tuple[int, ...]):
    """`abstract_state` of `nnx_class(**kwargs, input_shape=...)`, its weights never computed."""
    return nnx.split(nnx.eval_shape(lambda: nnx_class(**kwargs, input_shape=input_shape, rngs=nnx.Rngs(0))))


_cached_abstract_model = functools.lru_cache(maxsize=64)(_abstract_model)


def call(model: nnx.Module, x: jax.Array, *, train: bool, dropout_key: jax.Array | None = None) -> jax.Array:
    """`model(x)` in train mode (Dropout on, BatchNorm on batch statistics, which it moves) or eval mode;
    in train mode the Dropout streams restart from `dropout_key` (`nnx_layers.reseed_dropout`)."""
    if train:
        model.train()
        if nnx_layers.has_dropout(model):
            if dropout_key is None:
                raise ValueError(
                    f"{type(model).__name__} has Dropout: training it needs a key, rngs={{'dropout': key}}"
                )
            nnx_layers.reseed_dropout(model, dropout_key)
    else:
        model.eval()
    return model(x)


def abstract_state(model: nnx.Module) -> tuple[nnx.GraphDef[nnx.Module], nnx.State]:
    """`(graphdef, state)` of `model` with shapes and dtypes in place of its arrays."""
    graphdef, state = nnx.split(model)
    return graphdef, jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state)


def merge_abstract(graphdef: nnx.GraphDef[nnx.Module], abstract: nnx.State) -> nnx.Module:
    """A new model from `abstract_state`'s parts, ready for `load_linen_variables`: with fresh Variables,
    since a Variable may only be set in the trace (`jax.jit`, `jax.grad`, ...) it was made in."""
    return nnx.merge(graphdef, abstract, copy=True)


def nnx_apply(model: nnx.Module) -> Callable:
    """The functional form of an NNX model, with Linen's calling convention:

        apply(variables, x, train=False, rngs=None, mutable=False)
            -> logits, or (logits, {"batch_stats": ...}) when `mutable` names "batch_stats"

    `variables` are `linen_variables(model)` or any of the same paths and shapes (a train state's), so
    jaxcnn's train and eval steps run NNX models natively (merged from the variables inside `jax.jit`)
    exactly as they run Linen modules (`module.apply`). Only shapes are kept of `model` itself.
    """
    graphdef, abstract = abstract_state(model)

    def apply(variables, x, *, train: bool = False, rngs=None, mutable=False):
        module = load_linen_variables(merge_abstract(graphdef, abstract), variables)
        y = call(module, x, train=train, dropout_key=(rngs or {}).get("dropout"))
        if not mutable:
            return y
        mutable = [mutable] if isinstance(mutable, str) else list(mutable)
        return y, {k: v for k, v in linen_variables(module).items() if k in mutable and k != "params"}

    return apply


class LinenModel(nn.Module):
    """A Flax NNX model class used as a Flax Linen module: `apply(variables, x, train=False, rngs=...)`.

    The NNX model is built for the input's shape `(H, W, C)` (its `input_shape` argument), from
    `nnx_class(**kwargs, input_shape=..., rngs=...)`. `train=True` uses Dropout, with keys from the
    `dropout` RNG (`rngs={"dropout": key}`), and BatchNorm's batch statistics, whose running averages it
    updates when `batch_stats` is mutable (`mutable=["batch_stats"]`), as Linen's own layers do.

    Attributes:
      nnx_class: an NNX Module class, or a `functools.partial` of one.
      kwargs: the class's arguments besides `input_shape` and `rngs`.
    """

    nnx_class: Callable[..., nnx.Module]
    kwargs: Mapping[str, Any] = FrozenDict()

    def nnx_model(self, input_shape: Sequence[int], rngs: nnx.Rngs) -> nnx.Module:
        """The NNX model itself, initialised from `rngs`."""
        return self.nnx_class(**self.kwargs, input_shape=tuple(input_shape), rngs=rngs)

    def abstract_nnx_model(self, input_shape: Sequence[int]) -> nnx.Module:
        """The NNX model with shapes and dtypes in place of its weights (nothing is computed)."""
        key: tuple[Callable[..., nnx.Module], FrozenDict[str, Any], tuple[int, ...]] = (
            self.nnx_class,
            FrozenDict(self.kwargs),
            tuple(input_shape),
        )
        try:
            hash(key)
        except TypeError:  # an argument that cannot be a cache key (a list, say): built every time
            return merge_abstract(*_abstract_model(*key))
        return merge_abstract(*_cached_abstract_model(*key))

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        input_shape = tuple(jnp.shape(x)[1:])
        if self.is_initializing():
            model = self.nnx_model(input_shape, nnx.Rngs(params=self.make_rng("params"), dropout=0))
            self._store(linen_variables(model))  # the initial state, before a train-mode call moves it
        else:
            model = load_linen_variables(self.abstract_nnx_model(input_shape), self.variables)
        dropout = train and nnx_layers.has_dropout(model)
        y = call(model, x, train=train, dropout_key=self.make_rng("dropout") if dropout else None)
        if train and not self.is_initializing():
            self._store({"batch_stats": linen_variables(model).get("batch_stats", {})})
        return y

    def _store(self, variables: Mapping[str, Any]) -> None:
        for collection, tree in variables.items():
            for name, value in tree.items():
                self.put_variable(collection, name, value)
