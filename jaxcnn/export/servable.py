"""What an export needs of a trained model: the model itself, ready to serve, and what its inputs and outputs
mean (`ServingInfo`), from an in-memory model (`from_model`), a checkpoint (`from_checkpoint`) or a run's
workdir (`from_workdir`)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from jaxcnn import models
from jaxcnn._validate import choice, integer
from jaxcnn.data import normalize_on_device
from jaxcnn.models.bridge import abstract_state, merge_abstract

# The lowering every exported layer takes: `lax` ops only, which any platform runs and a serialized
# artifact may hold (`impl="auto"` would put jaxcnn's oneDNN custom call in a CPU export).
PORTABLE_IMPL = "xla"
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ServingInfo:
    """What an artifact's input and output mean, written beside it as JSON (`to_json` / `from_json`).

    Attributes:
      input_shape: one image's `(H, W, C)`, channels last.
      class_names: the name of each logit (empty: unknown).
      mean, std: per-channel normalization of the training images on the [0, 1] scale:
        the model takes `(pixels / 255 - mean) / std` (empty: unknown, the model takes what it was given).
      model: the registered model name ("" for a model not built by name).
      dtype: "float32" or "bfloat16", the artifact's input and weights; "int8" for a quantized ONNX one.
      raw_images: the artifact takes uint8 pixels and normalizes them itself.
      batch: the artifact's fixed batch size, or None for any (a symbolic dimension).
      format: "stablehlo" or "onnx".
      layout: "NHWC" or "NCHW", the artifact's input layout.
    """

    input_shape: tuple[int, int, int]
    class_names: tuple[str, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    model: str = ""
    dtype: str = "float32"
    raw_images: bool = False
    batch: int | None = None
    format: str = ""
    layout: str = "NHWC"

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServingInfo:
        fields = json.loads(text)
        for name in ("input_shape", "class_names", "mean", "std"):
            fields[name] = tuple(fields.get(name, ()))
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class ZooRecipe:
    """How to build a zoo model again in another process: `models.create_nnx(name, num_classes=...,
    input_shape=..., **kwargs)`, then its `variables` loaded (`models.load_linen_variables`)."""

    name: str
    num_classes: int
    kwargs: Mapping[str, Any]
    variables: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Servable:
    """A model in eval mode with every layer lowered portably (`portable`), its `ServingInfo`, and for a zoo
    model built by name (`from_zoo`) the recipe that builds it again."""

    model: nnx.Module
    info: ServingInfo
    recipe: ZooRecipe | None = None

    def forward(self, dtype: str = "float32", raw_images: bool = False) -> Callable[[jax.Array], jax.Array]:
        """`f(images) -> logits` (float32) of the model with its weights in `dtype`: images `(N, H, W, C)` in
        `dtype`, or uint8 pixels normalized first (`raw_images`, needs `info.mean` and `info.std`).

        Raises:
          ValueError: an unknown `dtype`, or `raw_images` without the normalization.
        """
        compute = DTYPES[choice(dtype, "dtype", DTYPES)]
        if raw_images and not (self.info.mean and self.info.std):
            raise ValueError(
                "raw_images folds the normalization in, but this model's mean and std are unknown: "
                "pass them (from_model(..., mean=, std=)) or export from a workdir"
            )
        graphdef, state = nnx.split(self.model)
        state = jax.tree.map(
            lambda a: a.astype(compute) if jnp.issubdtype(a.dtype, jnp.floating) else a, state
        )
        model = nnx.merge(graphdef, state)
        mean, std = self.info.mean, self.info.std

        def logits(images):
            if raw_images:
                images = normalize_on_device(images, mean, std)
            return model(images.astype(compute)).astype(jnp.float32)

        return logits


def portable(model: nnx.Module) -> nnx.Module:
    """A copy of the NNX `model` in eval mode whose layers (every module with an `impl`: convolutions and
    max pools) lower through plain `lax` (`impl="xla"`), which computes the same function as any other
    `impl`: what an exported artifact may contain and any platform runs."""
    model = nnx.clone(model)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "impl"):
            module.impl = PORTABLE_IMPL
    model.eval()
    return model


def _shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in shape):
        raise ValueError(f"input_shape must be one image's (H, W, C), positive ints, got {input_shape!r}")
    return shape


def from_model(
    model: nnx.Module | models.LinenModel,
    *,
    input_shape: Sequence[int],
    variables: Mapping[str, Any] | None = None,
    class_names: Sequence[str] = (),
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    name: str = "",
) -> Servable:
    """An in-memory model, ready to export: an NNX model (its weights as they are), or a zoo model's
    Linen form (`models.create(...)`) with its `variables` (`{"params": ..., "batch_stats": ...}`).

    Raises:
      TypeError: another kind of model, or Linen `variables` missing.
      ValueError: a bad `input_shape`, or `mean` / `std` without one value per channel.
    """
    shape = _shape(input_shape)
    if isinstance(model, models.LinenModel):
        if variables is None:
            raise TypeError(
                "a Linen model (models.create) comes with its variables: from_model(model, variables=)"
            )
        model = models.load_linen_variables(model.abstract_nnx_model(shape), variables)
    elif not isinstance(model, nnx.Module):
        raise TypeError(
            f"model must be a Flax NNX module or a zoo model's Linen form (models.create), got "
            f"{type(model).__name__}"
        )
    if len(mean) != len(std) or (mean and len(mean) != shape[2]):
        raise ValueError(f"mean and std need one value per channel ({shape[2]}), got {mean!r} and {std!r}")
    info = ServingInfo(
        shape, tuple(map(str, class_names)), tuple(map(float, mean)), tuple(map(float, std)), name
    )
    return Servable(portable(model), info)


def _eval_weights(state: Mapping[str, Any]) -> dict[str, Any]:
    """The variables evaluation uses of a checkpoint's train state: the moving average of the weights where
    the run kept one (as `TrainState.for_eval`), and the BatchNorm statistics."""
    params = state.get("ema_params") or state["params"]
    return {"params": params, "batch_stats": state.get("batch_stats") or {}}


def _checkpoint_state(checkpoint: str | os.PathLike) -> dict[str, Any]:
    from jaxcnn.training.finetune import newest_checkpoint_state  # imported here: Orbax, only for runs

    state = newest_checkpoint_state(checkpoint)
    if state is None:
        raise ValueError(
            f"checkpoint {os.fspath(checkpoint)!r} is not a jaxcnn workdir or checkpoint directory"
        )
    return state


def _abstract_nnx_model(build) -> nnx.Module:
    """The model `build()` makes, with shapes in place of weights (nothing is initialised)."""
    return merge_abstract(*abstract_state(nnx.eval_shape(build)))


def from_checkpoint(
    checkpoint: str | os.PathLike,
    model_name: str,
    *,
    input_shape: Sequence[int],
    num_classes: int | None = None,
    class_names: Sequence[str] = (),
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    **model_kwargs: Any,
) -> Servable:
    """The newest checkpoint of `checkpoint` (a workdir or its `checkpoints` directory) in the registered
    zoo model `model_name`, built with `model_kwargs`: its evaluation weights (the moving average where the
    run kept one). `num_classes` defaults to `len(class_names)`.

    Raises:
      ValueError: no checkpoint there, an unknown model, no `num_classes`, or weights that do not fit the
        model (every mismatch listed).
    """
    if num_classes is None:
        if not class_names:
            raise ValueError("from_checkpoint needs num_classes or class_names")
        num_classes = len(class_names)
    variables = _eval_weights(_checkpoint_state(checkpoint))
    return from_zoo(
        model_name,
        variables,
        input_shape=input_shape,
        num_classes=num_classes,
        class_names=class_names,
        mean=mean,
        std=std,
        **model_kwargs,
    )


def from_zoo(
    model_name: str,
    variables: Mapping[str, Any],
    *,
    input_shape: Sequence[int],
    num_classes: int,
    class_names: Sequence[str] = (),
    mean: Sequence[float] = (),
    std: Sequence[float] = (),
    **model_kwargs: Any,
) -> Servable:
    """The registered zoo model `model_name` (built with `num_classes` and `model_kwargs`) with `variables`
    (`{"params": ..., "batch_stats": ...}`), with the recipe that builds it again (for a converter that
    runs in its own environment).

    Raises:
      ValueError: an unknown or Linen model, or variables that do not fit it (every mismatch listed).
    """
    integer(num_classes, "num_classes", minimum=1)
    if not models.is_nnx(model_name):
        raise ValueError(f"model_name {model_name!r} is a Linen module: export needs a zoo (NNX) model")
    shape = _shape(input_shape)
    build = lambda: models.create_nnx(
        model_name, num_classes=num_classes, input_shape=shape, rngs=nnx.Rngs(0), **model_kwargs
    )
    model = models.load_linen_variables(_abstract_nnx_model(build), variables)
    servable = from_model(
        model, input_shape=shape, class_names=class_names, mean=mean, std=std, name=model_name
    )
    variables = jax.tree.map(np.asarray, dict(variables))
    return dataclasses.replace(
        servable, recipe=ZooRecipe(model_name, num_classes, dict(model_kwargs), variables)
    )


def from_workdir(workdir: str | os.PathLike) -> Servable:
    """The model a jaxcnn run trained, from its workdir: the architecture, compute dtype and model arguments
    of its `config.json`, its newest checkpoint's evaluation weights, and the class names, image shape and
    normalization of its dataset (whose test split is read for them).

    Raises:
      ValueError: no `config.json` or checkpoint there, or a run that trained an ensemble (several models).
      DataUnavailableError: the run's dataset cannot be read.
    """
    from jaxcnn import data
    from jaxcnn.training.config import read_sections
    from jaxcnn.training.model import model_arguments

    recorded = Path(workdir) / "config.json"
    if not recorded.is_file():
        raise ValueError(f"workdir {os.fspath(workdir)!r} holds no jaxcnn run (no config.json)")
    config = ml_collections.ConfigDict(json.loads(recorded.read_text()))
    sections = read_sections(config)
    if sections["ensemble"].size > 1:
        raise ValueError(
            f"workdir {os.fspath(workdir)!r} trained an ensemble of {sections['ensemble'].size} models; "
            "export takes one model"
        )
    test = data.load(config.dataset, "test", num_examples=1, **sections["data"].load_options(config.dataset))
    kwargs = model_arguments(config.model, sections["compute"], config.model_kwargs.to_dict())
    return from_checkpoint(
        workdir,
        config.model,
        input_shape=test.image_shape,
        class_names=test.class_names,
        mean=test.mean,
        std=test.std,
        **kwargs,
    )
