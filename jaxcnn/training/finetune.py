"""Fine-tuning: a run that starts from trained weights (`config.finetune.init_from`) and trains part of
the network (`config.finetune.freeze`).

    config.model = "resnet18"
    config.finetune.init_from = "resnet18.safetensors"   # or a jaxcnn workdir / checkpoint directory
    config.finetune.freeze = "backbone"                   # or a regular expression of parameter paths

Frozen parameters get no update (`optax.multi_transform` with `optax.set_to_zero`): their gradients
are unused, so XLA drops their computation from the jitted step. BatchNorm layers whose parameters are
all frozen normalise with their running statistics, which stay as loaded (`freeze_batch_norms`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx, traverse_util

from jaxcnn import models
from jaxcnn import nnx_layers as L
from jaxcnn._validate import Settings, boolean
from jaxcnn.models import ZooModel
from jaxcnn.training.checkpoint import Checkpoints

BACKBONE = "backbone"  # freeze's name for every parameter but the classifier's


@dataclasses.dataclass(frozen=True)
class FinetuneSettings(Settings):
    """`config.finetune`: start from trained weights, train part of the network.

    Attributes:
      init_from: "" (initialise from the seed), a jaxcnn workdir or checkpoint directory (the newest
        checkpoint's parameters and BatchNorm statistics), or a `.safetensors` file with torchvision's
        names (`models.load_torch_state_dict`). Classifier weights whose shape differs (other classes)
        keep their fresh initialisation; every other mismatch is an error listing them all.
      freeze: "" (train everything), "backbone" (everything but the classifier), or a regular expression
        matched from the start of parameter paths such as `layer1_0/conv1/kernel` (e.g. "conv1|bn1|layer1_").
      new_head: True: the classifier keeps its fresh initialisation even where `init_from`'s fits it
        (a task with as many classes as the one the weights were trained for).
    """

    init_from: str = ""
    freeze: str = ""
    new_head: bool = False

    def __post_init__(self):
        for name in ("init_from", "freeze"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a string, got {getattr(self, name)!r}")
        boolean(self.new_head, "new_head")
        try:
            re.compile(self.freeze)
        except re.error as error:
            raise ValueError(f"freeze must be a regular expression, got {self.freeze!r}: {error}") from None


def _path(path: tuple) -> str:
    return "/".join(str(getattr(key, "key", key)) for key in path)


def newest_checkpoint_state(path: str | os.PathLike) -> dict | None:
    """The train state (`params`, `batch_stats`, `ema_params`, ..., numpy) of the newest readable checkpoint
    of a jaxcnn workdir or of its `checkpoints` directory, verified by its checksums (a newer one that
    cannot be read, or differs from its checksums, is skipped with a warning; nothing is moved); None
    where `path` holds none.

    Raises:
      CheckpointError: none of the checkpoints there can be read.
    """
    path = Path(path)
    directory = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not directory.is_dir():
        return None
    with contextlib.closing(Checkpoints(directory, read_only=True)) as checkpoints:
        latest = checkpoints.read_latest_state()
    return None if latest is None else latest[1]


def read_weights(init_from: str | os.PathLike, model_name: str) -> dict:
    """`{"params": ..., "batch_stats": ...}` (numpy) from a `.safetensors` file of torchvision's names for
    `model_name`, or from the newest checkpoint of a jaxcnn workdir (or of its `checkpoints` directory)."""
    path = Path(init_from)
    if path.suffix == ".safetensors" and path.is_file():
        return models.load_torch_state_dict(model_name, path)
    state = newest_checkpoint_state(path)
    if state is not None:
        return {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    raise ValueError(
        f"config.finetune.init_from {os.fspath(init_from)!r} is neither a .safetensors file nor a jaxcnn "
        "workdir or checkpoint directory holding a checkpoint"
    )


def load_into(
    model: ZooModel, init_from: str | os.PathLike, model_name: str, new_head: bool = False
) -> list[str]:
    """Loads the weights of `init_from` into the NNX `model` (its classifier is kept when its shape
    differs, or always with `new_head`); returns lines that say what was loaded and what was not."""
    weights = read_weights(init_from, model_name)
    if new_head:
        weights = {
            part: {k: v for k, v in tree.items() if k != model.head_name} for part, tree in weights.items()
        }
    classifier = re.escape(model.head_name)
    variables, skipped = models.transfer_variables(
        models.linen_variables(model), weights, skip_mismatched=f"(params|batch_stats)/{classifier}/"
    )
    models.load_linen_variables(model, variables)
    loaded = sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(variables["params"]))
    lines = [f"finetune: loaded {loaded:,} parameters from {os.fspath(init_from)}"]
    if skipped:
        lines.append(
            f"finetune: kept the new {', '.join(skipped)} (other shape than in {os.fspath(init_from)})"
        )
    return lines


def frozen_mask(params: Any, freeze: str, classifier: str) -> Any:
    """A tree like `params`: True for the parameters `freeze` (see `FinetuneSettings`) names."""
    pattern: re.Pattern[str] | None
    if freeze == BACKBONE:
        pattern = re.compile(f"(?!{re.escape(classifier)}/)")
    else:
        pattern = re.compile(freeze) if freeze else None
    return jax.tree_util.tree_map_with_path(
        lambda path, _: bool(pattern and pattern.match(_path(path))), params
    )


def freezing(tx: optax.GradientTransformation, mask: Any) -> optax.GradientTransformation:
    """`tx` for the parameters where `mask` is False; no update (not even weight decay) where it is True."""
    labels = jax.tree.map(lambda frozen: "frozen" if frozen else "trained", mask)
    return optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)


def freeze_batch_norms(model: nnx.Module, params_mask: Any) -> int:
    """Marks `frozen` the BatchNorm layers of the NNX `model` whose parameters are all frozen in
    `params_mask`: they normalise with their running statistics, which stay as loaded, in training too
    (with batch statistics, a head trained on frozen features would meet other features at evaluation).
    Returns how many."""
    frozen_layers: dict[tuple, bool] = {}
    for path, frozen in traverse_util.flatten_dict(params_mask).items():
        frozen_layers[path[:-1]] = frozen_layers.get(path[:-1], True) and frozen
    count = 0
    for path, module in nnx.iter_graph(model):
        if isinstance(module, L.BatchNorm) and frozen_layers.get(tuple(map(str, path)), False):
            module.frozen, count = True, count + 1
    return count


def counts(params: Any, mask: Any) -> tuple[int, int]:
    """`(frozen, trained)` numbers of parameters."""
    sizes = jax.tree.map(lambda leaf, frozen: (math.prod(np.shape(leaf)), frozen), params, mask)
    pairs = jax.tree.leaves(sizes, is_leaf=lambda x: isinstance(x, tuple))
    frozen = sum(size for size, is_frozen in pairs if is_frozen)
    return frozen, sum(size for size, _ in pairs) - frozen


def prepare(model: ZooModel, settings: FinetuneSettings, model_name: str) -> tuple[Any, list[str]]:
    """Loads `settings.init_from` into the NNX `model` and works out what is frozen; returns `(params mask,
    lines to log)`. The mask is None when nothing is frozen."""
    lines = load_into(model, settings.init_from, model_name, settings.new_head) if settings.init_from else []
    if not settings.freeze:
        return None, lines
    params = models.linen_variables(model)["params"]
    mask = frozen_mask(params, settings.freeze, model.head_name)
    frozen, trained = counts(params, mask)
    if not trained:
        raise ValueError(f"config.finetune.freeze {settings.freeze!r} freezes every parameter")
    norms = freeze_batch_norms(model, mask)
    lines.append(
        f"finetune: {frozen:,} parameters frozen ({settings.freeze!r}), {trained:,} trained; "
        f"{norms} BatchNorm layers frozen (running statistics)"
    )
    return mask, lines


def log(lines: Iterable[str]) -> None:
    for line in lines:
        logging.info("%s", line)
