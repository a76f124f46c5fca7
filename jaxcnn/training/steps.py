"""Loss, metrics and the train/eval steps as pure functions; the caller jits and shards them.

Metrics are returned as sums (`loss`, `correct`, `count`) so they add up across steps,
devices and processes before one division at logging time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxcnn.training.state import TrainState

Metrics = dict[str, jax.Array]


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy `(N,)` from logits `(N, K)` and int labels `(N,)`."""
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def summed_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array, losses: jax.Array) -> Metrics:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def zero_metrics(skipped: bool = False) -> Metrics:
    """Empty sums; `skipped` adds a count of steps skipped for non-finite gradients."""
    names = ("loss", "correct", "count", "skipped") if skipped else ("loss", "correct", "count")
    return {name: jnp.zeros((), jnp.float32) for name in names}


def train_step(
    state: TrainState, batch: dict, *, label_smoothing: float = 0.0, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` (`image` `(B, H, W, C)`, `label` `(B,)`, `mask` `(B,)`).

    The loss is the masked mean over the batch; under `pmap` (`axis_name`), gradients are
    averaged over devices and metric sums added up.
    """
    dropout_key = jax.random.fold_in(state.rng, state.step)
    mask = batch["mask"]

    def loss_fn(params):
        logits, updates = state.apply_fn(
            state.variables(params),
            batch["image"],
            train=True,
            rngs={"dropout": dropout_key},
            mutable=["batch_stats"],
        )
        losses = cross_entropy_loss(logits, batch["label"], label_smoothing)
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), (logits, losses, updates)

    grads, (logits, losses, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    metrics = summed_metrics(logits, batch["label"], mask, losses)
    return state, metrics if axis_name is None else lax.psum(metrics, axis_name)


def eval_step(state: TrainState, batch: dict, *, axis_name: str | None = None) -> Metrics:
    """Summed loss and correct predictions of the padded, masked `batch` in eval mode."""
    logits = state.apply_fn(state.variables(), batch["image"], train=False)
    metrics = summed_metrics(
        logits, batch["label"], batch["mask"], cross_entropy_loss(logits, batch["label"])
    )
    return metrics if axis_name is None else lax.psum(metrics, axis_name)


def add_metrics(total: Metrics, new: Metrics) -> Metrics:
    return jax.tree.map(jnp.add, total, new)


def summarize(metrics: Metrics) -> dict[str, float]:
    """Sums on host -> `{"loss": mean loss, "accuracy": fraction correct}`."""
    count = max(float(metrics["count"]), 1.0)
    return {"loss": float(metrics["loss"]) / count, "accuracy": float(metrics["correct"]) / count}
