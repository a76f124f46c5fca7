"""Per-example gradients (`vmap` over `grad`) and DP-SGD: per-example clipping plus Gaussian noise.

    grads = per_example_grads(state, state.params, batch)      # every leaf (N, *param.shape)
    tx = dp_optimizer(optax.sgd(0.1), clip_norm=1.0, noise_multiplier=1.1, seed=0)
    state = create_train_state(model, tx, (28, 28, 1), seed=0)
    state, metrics = jax.jit(dp_train_step)(state, batch)

Each example is run as a batch of one, so a model's output for it cannot depend on the other
examples: BatchNorm is allowed in eval mode only (its running statistics), not in train mode.
The clipping and noise are optax's (`optax.contrib.differentially_private_aggregate`).

Keep the batch on one device: under `jit` with a batch-sharded input, XLA's partitioner (jax 0.10.2,
CPU) returns wrong per-example kernel gradients of `lax.conv_general_dilated` (`vmap` over `grad` with
respect to the kernel, the vmapped axis sharded).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxcnn._validate import Settings, number
from jaxcnn.models.bridge import linen_variables, nnx_apply
from jaxcnn.training.state import TrainState
from jaxcnn.training.steps import Metrics, cross_entropy_loss, summed_metrics


@dataclasses.dataclass(frozen=True)
class DPSettings(Settings):
    """`config.dp`: DP-SGD (optax's per-example clipping and noise) when `clip_norm` > 0: each example's
    gradient is clipped to this global L2 norm, and Gaussian noise of std `clip_norm * noise_multiplier`
    added to their sum. Needs a model without BatchNorm, one device and one ensemble member."""

    clip_norm: float = 0.0
    noise_multiplier: float = 0.0

    def __post_init__(self):
        number(self.clip_norm, "clip_norm", minimum=0.0)
        number(self.noise_multiplier, "noise_multiplier", minimum=0.0)
        if self.noise_multiplier and not self.clip_norm:
            raise ValueError("noise_multiplier > 0 needs clip_norm > 0 (the noise std is relative to it)")

    @property
    def enabled(self) -> bool:
        return self.clip_norm > 0


def _apply_fn_and_variables(model_or_state, params, batch_stats) -> tuple[Callable, dict]:
    if isinstance(model_or_state, TrainState):
        apply_fn = model_or_state.apply_fn
        batch_stats = model_or_state.batch_stats if batch_stats is None else batch_stats
    elif isinstance(model_or_state, nnx.Module):
        apply_fn = nnx_apply(model_or_state)
        if batch_stats is None:
            batch_stats = linen_variables(model_or_state).get("batch_stats")
    elif isinstance(model_or_state, nn.Module):
        apply_fn = model_or_state.apply
    elif callable(model_or_state):
        apply_fn = model_or_state
    else:
        raise TypeError(
            "model_or_state must be a TrainState, a Flax NNX or Linen module or an apply function "
            f"apply(variables, images, train=..., rngs=...), got {type(model_or_state).__name__}"
        )
    variables = {"params": params}
    if batch_stats:
        variables["batch_stats"] = batch_stats
    return apply_fn, variables


def per_example_losses_and_grads(
    model_or_state: Any,
    params: Any,
    batch: dict,
    *,
    batch_stats: Any = None,
    train: bool = False,
    rng: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Any, jax.Array, jax.Array]:
    """`per_example_grads`, plus each example's loss `(N,)` and logits `(N, num_classes)`."""
    apply_fn, variables = _apply_fn_and_variables(model_or_state, params, batch_stats)
    if train and "batch_stats" in variables:
        raise ValueError(
            "per-example gradients in train mode are undefined for a model with BatchNorm (its batch "
            "statistics mix the examples); use train=False or a model without BatchNorm"
        )
    if train and rng is None:
        rng = jax.random.PRNGKey(0)
    images, labels = batch["image"], batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape, jnp.float32))

    def loss(params, image, label, weight, index):
        rngs = {"dropout": jax.random.fold_in(rng, index)} if train else None
        logits = apply_fn({**variables, "params": params}, image[None], train=train, rngs=rngs)
        return weight * cross_entropy_loss(logits, label[None], label_smoothing)[0], logits[0]

    grad_fn = jax.vmap(jax.value_and_grad(loss, has_aux=True), in_axes=(None, 0, 0, 0, 0))
    (losses, logits), grads = grad_fn(params, images, labels, mask, jnp.arange(labels.shape[0]))
    return grads, losses, logits


def per_example_grads(
    model_or_state: Any,
    params: Any,
    batch: dict,
    *,
    batch_stats: Any = None,
    train: bool = False,
    rng: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> Any:
    """The gradient of each example's cross-entropy loss with respect to `params`.

    Args:
      model_or_state: a `TrainState` (its `apply_fn` and `batch_stats`), a Flax NNX module (its
        `batch_stats`), a Flax Linen module, or an apply function
        `apply(variables, images, train=..., rngs=...) -> logits`.
      params: the parameters to differentiate (e.g. `state.params`, or an NNX model's
        `models.linen_variables(model)["params"]`).
      batch: `image` `(N, H, W, C)`, int `label` `(N,)`, optional `mask` `(N,)` (0 gives a zero gradient).
      batch_stats: BatchNorm statistics (default: the state's or NNX model's; models without BatchNorm
        have none).
      train: train-mode forward pass (dropout); refused for models with BatchNorm.
      rng: dropout key in train mode; example i uses `fold_in(rng, i)`.
      label_smoothing: as in the train step.

    Returns:
      A pytree like `params` whose leaves have a leading example axis: `(N, *leaf.shape)`.
    """
    grads, _, _ = per_example_losses_and_grads(
        model_or_state, params, batch, batch_stats=batch_stats, train=train, rng=rng,
        label_smoothing=label_smoothing,
    )  # fmt: skip
    return grads


def dp_optimizer(
    tx: optax.GradientTransformation, clip_norm: float, noise_multiplier: float, seed: int
) -> optax.GradientTransformation:
    """`tx` behind DP-SGD aggregation: each example's gradient clipped to global L2 norm `clip_norm`,
    summed, Gaussian noise of std `clip_norm * noise_multiplier` added, divided by the batch size.

    The result expects per-example gradients (leading axis N), as `dp_train_step` passes; the noise
    key lives in the optimizer state, so it is checkpointed and a resumed run draws the same noise.
    """
    settings = DPSettings(clip_norm, noise_multiplier)
    if not settings.enabled:
        raise ValueError(f"clip_norm must be > 0, got {clip_norm!r}")
    aggregate = optax.contrib.differentially_private_aggregate(clip_norm, noise_multiplier, key=seed)
    return optax.chain(aggregate, tx)


def dp_train_step(
    state: TrainState, batch: dict, *, label_smoothing: float = 0.0, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """A DP-SGD step: per-example gradients of `batch` into `state.tx`, made by `dp_optimizer`.

    Same batch and metrics as `train_step`. The model must not have BatchNorm. One device only: under
    `pmap` each device would add its own noise, and with a batch-sharded `jit` XLA (jax 0.10, CPU)
    computes wrong per-example kernel gradients of convolutions.
    """
    if axis_name is not None:
        raise ValueError("dp_train_step does not run under pmap (each device would add its own noise)")
    grads, losses, logits = per_example_losses_and_grads(
        state, state.params, batch, train=True, rng=jax.random.fold_in(state.rng, state.step),
        label_smoothing=label_smoothing,
    )  # fmt: skip
    state = state.apply_gradients(grads=grads)
    # The per-example losses carry the mask as a weight; summed_metrics applies it again (0/1, so equal).
    return state, summed_metrics(logits, batch["label"], batch["mask"], losses)
