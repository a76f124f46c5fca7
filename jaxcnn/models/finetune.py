"""Starting from trained weights: a new classifier for another number of classes, and weights moved from
one model's variables into another's (its backbone), in both APIs.

    model = models.create_nnx("resnet18", num_classes=1000, rngs=nnx.Rngs(0))
    model = models.load_linen_variables(model, models.load_torch_state_dict("resnet18", "r18.safetensors"))
    models.replace_head(model, 10, rngs=nnx.Rngs(1))                      # NNX: the attribute is replaced

    target = models.create("resnet18", num_classes=10).init(key, images)   # Linen: a model with 10 classes
    variables, skipped = models.transfer_variables(target, pretrained, skip_mismatched="fc")
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util

from jaxcnn._validate import integer
from jaxcnn.models._common import ZooModel


def replace_head(model: ZooModel, num_classes: int, *, rngs: nnx.Rngs) -> ZooModel:
    """Replaces `model`'s classifier (the layer named by `model.head_name`) in place by a new one with
    `num_classes` outputs, initialised as the model initialises it; the backbone is kept. Returns `model`.

    `(N, H, W, C)` -> logits `(N, num_classes)` afterwards.
    """
    if not isinstance(model, ZooModel):
        raise TypeError(f"model must be a jaxcnn zoo model (models.ZooModel), got {type(model).__name__}")
    integer(num_classes, "num_classes", minimum=1)
    old = getattr(model, model.head_name)
    head = nnx.clone(old)  # a Dense or a 1x1 Conv: its classes are the last axis of kernel and bias
    kernel_shape = (*old.kernel.shape[:-1], num_classes)
    head.kernel = nnx.Param(old.kernel_init(rngs.params(), kernel_shape, old.param_dtype))
    if old.bias is not None:
        head.bias = nnx.Param(old.bias_init(rngs.params(), (num_classes,), old.param_dtype))
    head.out_features = num_classes
    setattr(model, model.head_name, head)
    return model


def _flat(variables) -> dict[tuple[str, ...], jax.Array]:
    return traverse_util.flatten_dict(variables)


def transfer_variables(
    target: Mapping[str, Any], source: Mapping[str, Any], *, skip_mismatched: str = ""
) -> tuple[dict[str, Any], list[str]]:
    """`target`'s variables with every leaf taken from `source` (Linen-style dicts: `{"params": ...,
    "batch_stats": ...}`, as `models.linen_variables` gives), path for path.

    Args:
      target: the variables of the model to fill (they give the structure and the leaves skipped).
      source: the trained variables.
      skip_mismatched: a regular expression; leaves whose path (`"params/fc/kernel"`) it matches from its
        start keep `target`'s value when their shape differs or `source` lacks them (e.g. `"params/fc/"`:
        a classifier for other classes).

    Returns:
      `(variables, skipped)`: the merged variables and the paths of the leaves kept from `target`.

    Raises:
      ValueError: any other leaf missing from `source`, unexpected in it, or of another shape; the
        message lists them all, and nothing is transferred.
    """
    want, have = _flat(target), _flat(source)
    skip = re.compile(skip_mismatched) if skip_mismatched else None
    merged, skipped, missing, mismatched = {}, [], [], []
    for path, leaf in want.items():
        name = "/".join(path)
        fits = path in have and have[path].shape == leaf.shape
        if fits:
            merged[path] = have[path]
        elif skip is not None and skip.match(name):
            merged[path] = leaf
            skipped.append(name)
        elif path in have:
            mismatched.append(f"{name}: expected {tuple(leaf.shape)}, got {tuple(have[path].shape)}")
        else:
            missing.append(name)
    unexpected = ["/".join(p) for p in have if p not in want and not (skip and skip.match("/".join(p)))]
    problems = [
        f"{what} ({len(names)}): {', '.join(names)}"
        for what, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", mismatched),
        )
        if names
    ]
    if problems:
        raise ValueError("the weights do not fit the model: " + "; ".join(problems))
    return traverse_util.unflatten_dict(merged), skipped
