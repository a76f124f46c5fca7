"""Pictures of runs and models, drawn with matplotlib.

Every `plot_*` function returns a `matplotlib.figure.Figure` made without pyplot: it needs no display
and leaves the user's backend alone (no `matplotlib.use`), nothing is shown and nothing needs closing.
Save one with `figure.savefig(path)`; in a notebook (`%matplotlib inline`), a Figure that ends a cell is
displayed. The helpers `predict`, `conv_outputs` and `first_conv` compute what the pictures show from an
NNX model, or a Linen model and its variables.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.typing import ArrayLike
from matplotlib.figure import Figure

from jaxcnn import layers, nnx_layers
from jaxcnn.data import ArrayDataset, batches
from jaxcnn.models.bridge import LinenModel, load_linen_variables
from jaxcnn.training.metrics import read_metrics

Model = nnx.Module | nn.Module  # an NNX model, or a Linen model and its variables
Variables = Mapping[str, Any]


def plot_learning_curves(lines: list[dict[str, Any]]) -> Figure:
    """Loss and accuracy against step, train and test, from `metrics.jsonl` lines. Returns the Figure."""
    figure = Figure(figsize=(10, 3.6), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for split, style in (("train", "-"), ("test", "o-")):
        points = [line for line in lines if line.get("split") == split]
        if not points:
            continue
        steps = [line["step"] for line in points]
        # A window whose every step was skipped (non-finite) has no loss: a gap in the curve.
        loss = np.array([line["loss"] for line in points], dtype=float)
        accuracy = 100 * np.array([line["accuracy"] for line in points], dtype=float)
        loss_axes.plot(steps, loss, style, label=split, markersize=4)
        accuracy_axes.plot(steps, accuracy, style, label=split, markersize=4)
    loss_axes.set(xlabel="step", ylabel="cross-entropy loss", title="Loss")
    accuracy_axes.set(xlabel="step", ylabel="accuracy (%)", title="Accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return figure


def save_learning_curves(workdir: str | os.PathLike) -> Path:
    """Draws `workdir/metrics.jsonl` into `workdir/plots/curves.png` and returns that path."""
    workdir = Path(workdir)
    out = workdir / "plots" / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_learning_curves(read_metrics(workdir / "metrics.jsonl"))
    figure.savefig(out, dpi=110)
    return out


# --- What the pictures show, computed from a model -------------------------------------------------


def _model_to_run(model, variables, input_shape: tuple[int, ...]) -> nnx.Module | nn.Module:
    """`model` as it is run: an NNX model as given (it holds its weights); a zoo model's Linen form as its
    NNX model holding `variables`; a user's Linen module as it is (applied with `variables`)."""
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise TypeError(
                f"variables are for a Linen model; the NNX model {type(model).__name__} holds its own"
            )
        return model
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a flax.nnx.Module or a flax.linen.Module, got {type(model).__name__}")
    if variables is None:
        raise TypeError(f"the Linen model {type(model).__name__} needs its variables: pass variables=...")
    if isinstance(model, LinenModel):
        return load_linen_variables(model.abstract_nnx_model(input_shape), variables)
    return model


def _eval_view(model: nnx.Module) -> nnx.Module:
    """The model in eval mode (Dropout off, BatchNorm on running statistics), sharing its weights; the
    model itself keeps its mode."""
    return nnx.view(model, deterministic=True, use_running_average=True, raise_if_not_found=False)


def _images(images) -> jax.Array:
    """`images` `(N, *spatial, C)` as an array; named clearly when given in the old place of `variables`."""
    if not hasattr(images, "shape"):
        raise TypeError(
            f"images must be an array (N, *spatial, C), got {type(images).__name__} "
            "(a Linen model's variables go in variables=)"
        )
    if len(images.shape) < 3:
        raise ValueError(f"images must be an array (N, *spatial, C), got shape {tuple(images.shape)}")
    return jnp.asarray(images)


def predict(
    model: Model, dataset: ArrayDataset, batch_size: int = 500, *, variables: Variables | None = None
) -> np.ndarray:
    """Predicted labels `(N,)` of every example of `dataset`, in order, in eval mode.

    `model` is an NNX model, or a Linen model with its `variables`.
    """
    if not isinstance(dataset, ArrayDataset):
        raise TypeError(
            f"dataset must be a jaxcnn.data.ArrayDataset, got {type(dataset).__name__} "
            "(a Linen model's variables go in variables=)"
        )
    model = _model_to_run(model, variables, dataset.image_shape)
    if isinstance(model, nnx.Module):
        # The Dropout streams stay out of the traced state: eval draws nothing, and those of a model
        # loaded into `abstract_nnx_model` hold no keys.
        # flax types a split by two filters as (graphdef, state, *states): it does not know there is no third.
        graphdef, streams, state = nnx.split(_eval_view(model), nnx.RngState, ...)  # type: ignore[misc]
        apply = jax.jit(lambda state, images: nnx.merge(graphdef, streams, state)(images).argmax(-1))
        predicted_labels = lambda images: apply(state, images)
    else:
        # flax types apply's result as a union with mutable='s (output, variables) pair; _model_to_run
        # refused a Linen model without variables.
        apply_linen = lambda images: model.apply(variables, images, train=False).argmax(-1)  # type: ignore[arg-type, union-attr]
        predicted_labels = jax.jit(apply_linen)
    predicted = [
        np.asarray(predicted_labels(batch["image"]))[batch["mask"] > 0]
        for batch in batches(dataset, batch_size, shuffle=False, drop_remainder=False)
    ]
    return np.concatenate(predicted)


def _conv_calls(model, variables, images) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """`(path, kernel, feature maps)` of every call of a jaxcnn convolution on `images`, in call order,
    in eval mode: NNX layers seen by `nnx_layers.observe_calls`, Linen ones by `nn.intercept_methods`."""
    images = _images(images)
    model = _model_to_run(model, variables, tuple(images.shape[1:]))
    calls = []
    if isinstance(model, nnx.Module):
        view = _eval_view(model)
        paths = {id(module): "/".join(map(str, path)) for path, module in nnx.iter_graph(view)}

        def record(layer, inputs, outputs):
            if isinstance(layer, nnx_layers.Conv):
                calls.append((paths[id(layer)], np.asarray(layer.kernel[...]), np.asarray(outputs)))

        with nnx_layers.observe_calls(record):
            view(images)
        return calls

    def intercept(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, layers.Conv) and context.method_name == "__call__":
            kernel = context.module.variables["params"]["kernel"]
            calls.append(("/".join(context.module.path), np.asarray(kernel), np.asarray(out)))
        return out

    with nn.intercept_methods(intercept):
        model.apply(variables, images, train=False)
    return calls


def conv_outputs(
    model: Model, images: ArrayLike, *, variables: Variables | None = None
) -> dict[str, np.ndarray]:
    """The output of every jaxcnn convolution (`nnx_layers.Conv`, `layers.Conv`) the model applies to
    `images`, in call order (eval mode).

    `model` is an NNX model, or a Linen model with its `variables`. Keys are the layers' paths in the
    model, such as `"conv1"` or `"layer1_0/conv1"` (where its `kernel` sits), values the feature maps
    `(N, *spatial, features)` before any normalisation or activation; a layer called twice keeps its
    first output.
    """
    outputs: dict[str, np.ndarray] = {}
    for path, _, maps in _conv_calls(model, variables, images):
        outputs.setdefault(path, maps)
    return outputs


def first_conv(
    model: Model, images: ArrayLike, *, variables: Variables | None = None
) -> tuple[str, np.ndarray, np.ndarray]:
    """`(path, kernel, feature_maps)` of the first convolution the model applies to `images`.

    `model` is an NNX model, or a Linen model with its `variables`. The kernel `(*window, C_in, C_out)`
    is the layer's filters, each the "preferred image" of its unit; the feature maps
    `(N, *spatial, C_out)` are their responses to `images`.
    """
    calls = _conv_calls(model, variables, images)
    if not calls:
        raise ValueError(
            f"{type(model).__name__} applies no jaxcnn convolution (nnx_layers.Conv or layers.Conv) to "
            f"inputs of shape {tuple(np.shape(images))}"
        )
    return calls[0]


def confusion_matrix(labels: ArrayLike, predictions: ArrayLike, num_classes: int) -> np.ndarray:
    """`(num_classes, num_classes)` counts: row = true label, column = predicted label."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


# --- Pictures -------------------------------------------------------------------------------------


def _image_grid(count: int, columns: int, cell: float = 1.3):
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    figure = Figure(figsize=(cell * columns, cell * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    return figure, list(axes.flat)


def _show(axis, image: ArrayLike, **kwargs) -> None:
    """An `(H, W, C)` image: C = 1 in gray, C = 3 as RGB rescaled to [0, 1]."""
    image = np.asarray(image, np.float32)
    if image.shape[-1] == 3:
        low, high = image.min(), image.max()
        axis.imshow((image - low) / (high - low or 1.0), interpolation="nearest")
    else:
        axis.imshow(image[..., 0], cmap="gray", interpolation="nearest", **kwargs)


def plot_filters(kernel: ArrayLike, *, columns: int = 8, title: str | None = None) -> Figure:
    """The filters of a 2-d convolution kernel `(H, W, C_in, C_out)` as `C_out` small images.

    One input channel is drawn in gray with zero at mid-gray (symmetric limits per filter), so
    bright pixels are positive weights and dark ones negative; three input channels as RGB; any
    other number is averaged over the input channels.
    """
    filters = np.asarray(kernel, np.float32)
    if filters.ndim != 4:
        raise ValueError(f"kernel must be a 2-d conv kernel (H, W, C_in, C_out), got shape {filters.shape}")
    if filters.shape[2] not in (1, 3):
        filters = filters.mean(axis=2, keepdims=True)
    figure, axes = _image_grid(filters.shape[-1], columns)
    for index, axis in enumerate(axes[: filters.shape[-1]]):
        limit = float(np.abs(filters[..., index]).max()) or 1.0
        _show(axis, filters[..., index], vmin=-limit, vmax=limit)
        axis.set_title(str(index), fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def plot_feature_maps(
    maps: ArrayLike,
    *,
    image: ArrayLike | None = None,
    max_maps: int = 32,
    columns: int = 8,
    title: str | None = None,
) -> Figure:
    """Feature maps `(H, W, C)` of one input, one panel per channel (the first `max_maps`),
    after the input `image` `(H', W', C')` when given. Each map has its own colour scale."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"maps must be (H, W, C) for one input, got shape {maps.shape}")
    count = min(maps.shape[-1], max_maps)
    offset = 0 if image is None else 1
    figure, axes = _image_grid(count + offset, columns)
    if image is not None:
        _show(axes[0], image)
        axes[0].set_title("input", fontsize=8)
    for index in range(count):
        axes[offset + index].imshow(maps[..., index], cmap="viridis", interpolation="nearest")
        axes[offset + index].set_title(f"map {index}", fontsize=8)
    if title:
        figure.suptitle(title)
    return figure


def plot_confusion_matrix(
    matrix: ArrayLike, class_names: Sequence[str] | None = None, *, title: str | None = None
) -> Figure:
    """A confusion matrix (rows true, columns predicted), coloured by the fraction of each true
    class and annotated with counts."""
    matrix = np.asarray(matrix)
    classes = len(matrix)
    names = list(class_names) if class_names is not None else [str(k) for k in range(classes)]
    fractions = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.8 + 0.45 * classes
    figure = Figure(figsize=(size + 1.2, size), layout="constrained")
    axis = figure.subplots()
    shown = axis.imshow(fractions, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(shown, ax=axis, label="fraction of the true class", shrink=0.8)
    for (row, column), count in np.ndenumerate(matrix):
        if count:
            colour = "white" if fractions[row, column] > 0.5 else "black"
            axis.text(column, row, str(count), ha="center", va="center", fontsize=7, color=colour)
    axis.set(xticks=range(classes), yticks=range(classes), xlabel="predicted", ylabel="true")
    axis.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    axis.set_yticklabels(names, fontsize=8)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    axis.set_title(title or f"Confusion matrix (accuracy {accuracy:.1%})")
    return figure


def plot_misclassified(
    images: np.ndarray | jax.Array,
    labels: ArrayLike,
    predictions: ArrayLike,
    class_names: Sequence[str] | None = None,
    *,
    max_examples: int = 16,
    columns: int = 8,
    title: str | None = None,
) -> Figure:
    """The first `max_examples` images `(N, H, W, C)` whose prediction differs from the label,
    each titled "true → predicted"."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    wrong = np.flatnonzero(labels != predictions)[:max_examples]
    name = (lambda k: class_names[k]) if class_names is not None else str
    figure, axes = _image_grid(max(len(wrong), 1), columns, cell=1.5)
    for axis, index in zip(axes, wrong):
        _show(axis, np.asarray(images[index]))
        axis.set_title(f"{name(labels[index])} → {name(predictions[index])}", fontsize=7)
    if not len(wrong):
        axes[0].text(0.5, 0.5, "no misclassified examples", ha="center", va="center")
    figure.suptitle(title or f"Misclassified: {len(wrong)} shown of {int((labels != predictions).sum())}")
    return figure
