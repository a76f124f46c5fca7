"""Loss, metrics and the train/eval steps as pure functions; the caller jits and shards them.

Metrics are returned as sums (`loss`, `correct`, `count`) so they add up across steps,
devices and processes before one division at logging time. A run's step is a plain step (or
`ensemble.ensemble_train_step`, `per_example.dp_train_step`) wrapped once, as its config asks, by
`normalizing`, `augmenting`, `averaging_weights` and `accumulating` below, and run a call's steps at a
time by `stepping_per_call` (`config.steps_per_call`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxcnn._validate import Settings, number
from jaxcnn.data.augment import Augmentation, eval_views, mix_batch
from jaxcnn.data.pipeline import normalize_on_device, unpack_on_device
from jaxcnn.training.state import TrainState

Metrics = dict[str, jax.Array]
# step(state, batch) -> (state, metrics): one update, label smoothing and axis name already bound.
Step = Callable[[TrainState, dict], tuple[TrainState, Metrics]]


@dataclasses.dataclass(frozen=True)
class LossSettings(Settings):
    """`config.loss`: the training loss, softmax cross-entropy against targets smoothed by
    `label_smoothing` (0 = one-hot; `optax.smooth_labels`). Evaluation always scores one-hot targets."""

    label_smoothing: float = 0.0

    def __post_init__(self):
        number(self.label_smoothing, "label_smoothing", minimum=0.0, below=1.0)


def cross_entropy_loss(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy `(N,)` from logits `(N, K)` and int labels `(N,)`."""
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def summed_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array, losses: jax.Array) -> Metrics:
    correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
    return {"loss": jnp.sum(losses * mask), "correct": jnp.sum(correct * mask), "count": jnp.sum(mask)}


def zero_metrics(skipped: bool = False, ensemble: bool = False) -> Metrics:
    """Empty sums; `skipped` adds a count of steps skipped for non-finite gradients, `ensemble`
    the sums behind `ensemble_accuracy` (see `jaxcnn.training.ensemble.ensemble_train_step`)."""
    names = ["loss", "correct", "count"]
    names += ["skipped"] if skipped else []
    names += ["ensemble_correct", "ensemble_count"] if ensemble else []
    return {name: jnp.zeros((), jnp.float32) for name in names}


def train_step_outputs(
    state: TrainState, batch: dict, *, label_smoothing: float = 0.0, axis_name: str | None = None
) -> tuple[TrainState, Metrics, jax.Array]:
    """`train_step` that also returns the logits `(B, num_classes)` it computed before the update."""
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
        if "mix_label" in batch:  # Mixup/CutMix: the targets mixed as the images were (linear in them)
            partner = cross_entropy_loss(logits, batch["mix_label"], label_smoothing)
            losses = batch["mix_weight"] * losses + (1 - batch["mix_weight"]) * partner
        return jnp.sum(losses * mask) / jnp.maximum(jnp.sum(mask), 1.0), (logits, losses, updates)

    grads, (logits, losses, updates) = jax.grad(loss_fn, has_aux=True)(state.params)
    if axis_name is not None:
        grads = lax.pmean(grads, axis_name)
    state = state.apply_gradients(grads=grads, batch_stats=updates.get("batch_stats", {}))
    metrics = summed_metrics(logits, batch["label"], mask, losses)
    return state, metrics if axis_name is None else lax.psum(metrics, axis_name), logits


def train_step(
    state: TrainState, batch: dict, *, label_smoothing: float = 0.0, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer step on `batch` (`image` `(B, H, W, C)`, `label` `(B,)`, `mask` `(B,)`).

    The loss is the masked mean over the batch; under `pmap` (`axis_name`), gradients are
    averaged over devices and metric sums added up.
    """
    state, metrics, _ = train_step_outputs(state, batch, label_smoothing=label_smoothing, axis_name=axis_name)
    return state, metrics


def predict(state: TrainState, images: jax.Array, *, flip: bool = False, shift: int = 0) -> jax.Array:
    """Eval-mode logits `(N, num_classes)` of `images` `(N, H, W, C)`.

    With `flip` or `shift` (test-time augmentation), the mean logits over `data.eval_views`: each
    image, its left-right mirror image (`flip`) and its copies moved `shift` pixels up, down, left and
    right (`shift`), views the model has learnt alike when its training flipped and cropped at random.
    """
    views = eval_views(images, flip=flip, shift=shift)
    logits = [state.apply_fn(state.variables(), view, train=False) for view in views]
    if len(logits) == 1:
        return logits[0]
    return sum(view_logits.astype(jnp.float32) for view_logits in logits) / len(logits)


TOP_K = 5  # evaluation of more classes than this also counts the labels among the top 5 logits


def eval_step_outputs(
    state: TrainState, batch: dict, *, flip: bool = False, shift: int = 0
) -> tuple[Metrics, jax.Array]:
    """This device's summed metrics of `batch` in eval mode, and the logits `(B, num_classes)`
    (`flip`, `shift`: see `predict`). With more than `TOP_K` classes the sums add `top5_correct`, the
    examples whose label is among the `TOP_K` largest logits (ties: the lower class first)."""
    logits = predict(state, batch["image"], flip=flip, shift=shift)
    losses = cross_entropy_loss(logits, batch["label"])
    metrics = summed_metrics(logits, batch["label"], batch["mask"], losses)
    if logits.shape[-1] > TOP_K:
        hits = jnp.any(lax.top_k(logits, TOP_K)[1] == batch["label"][:, None], axis=-1)
        metrics["top5_correct"] = jnp.sum(hits.astype(jnp.float32) * batch["mask"])
    return metrics, logits


def eval_step(
    state: TrainState, batch: dict, *, axis_name: str | None = None, flip: bool = False, shift: int = 0
) -> Metrics:
    """Summed loss and correct predictions of the padded, masked `batch` in eval mode; with `flip` or
    `shift`, of the logits averaged over test-time views (see `predict`)."""
    metrics, _ = eval_step_outputs(state, batch, flip=flip, shift=shift)
    return metrics if axis_name is None else lax.psum(metrics, axis_name)


def add_metrics(total: Metrics, new: Metrics) -> Metrics:
    return jax.tree.map(jnp.add, total, new)


def summarize(metrics: Metrics) -> dict[str, float | None]:
    """Sums on host -> `{"loss": mean loss, "accuracy": fraction correct}`, plus `top5_accuracy` where the
    sums count `top5_correct` (evaluations of more than `TOP_K` classes) and `ensemble_accuracy`
    (the accuracy of the members' averaged logits) for an ensemble, whose loss and accuracy are the
    members' means. Means over no example (every step of a window skipped) are None."""
    count = float(metrics["count"])
    summary = {"loss": _mean(metrics["loss"], count), "accuracy": _mean(metrics["correct"], count)}
    if "top5_correct" in metrics:
        summary["top5_accuracy"] = _mean(metrics["top5_correct"], count)
    if "ensemble_correct" in metrics:
        summary["ensemble_accuracy"] = _mean(metrics["ensemble_correct"], float(metrics["ensemble_count"]))
    return summary


def _mean(total, count: float) -> float | None:
    return float(total) / count if count else None


# --- Wrappers of a step, chosen once per run ------------------------------------------------------------


def normalizing(step: Callable, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """`step(state, batch, ...)` on batches of uint8 images (as a run's pipeline sends them), normalized
    first, in the compiled program, exactly as `data.normalize` would on the host; for train and eval
    steps alike."""

    def normalized(state, batch: dict, *args):
        return step(state, {**batch, "image": normalize_on_device(batch["image"], mean, std)}, *args)

    return normalized


def augmenting(step: Step, augmentation: Augmentation, key: jax.Array, axis_name: str | None = None) -> Step:
    """`step` on the batch augmented on device, with keys from `fold_in(key, state.step)`: a function of
    (seed, step) only, so a resumed run augments exactly as an uninterrupted one."""
    if not (augmentation.enabled or augmentation.mixes):
        return step

    def augmented(state: TrainState, batch: dict):
        step_key = jax.random.fold_in(key, state.step)
        images = augmentation(step_key, batch["image"], axis_name=axis_name)
        if augmentation.mixes:  # its own draws: a run with mixing crops and flips as one without
            images, weight = mix_batch(
                jax.random.fold_in(step_key, 1), images, augmentation.mixup_alpha, augmentation.cutmix_alpha
            )
            batch = {**batch, "mix_label": batch["label"][::-1], "mix_weight": weight}
        return step(state, {**batch, "image": images})

    return augmented


def averaging_weights(step: Step, decay: float) -> Step:
    """`step`, then the moving average of the weights moved toward them (`TrainState.update_ema`)."""
    if not decay:
        return step

    def averaged(state: TrainState, batch: dict):
        state, metrics = step(state, batch)
        return state.update_ema(decay), metrics

    return averaged


def accumulating(
    step: Step, skip_nonfinite: bool = False
) -> Callable[[TrainState, Metrics, dict], tuple[TrainState, Metrics]]:
    """`fn(state, metric_sums, batch) -> (state, metric_sums)`: `step`, with its metrics added to the sums.

    With `skip_nonfinite` (the optimizer skips updates from non-finite gradients), a step whose loss is
    not finite adds nothing but a count in `skipped` (`zero_metrics(skipped=True)`): its metrics would
    poison the window's sums.
    """

    def accumulated(state: TrainState, metric_sums: Metrics, batch: dict):
        state, metrics = step(state, batch)
        if skip_nonfinite:
            finite = jnp.isfinite(metrics["loss"])
            metrics = jax.tree.map(lambda m: jnp.where(finite, m, 0.0), metrics)
            metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
        return state, add_metrics(metric_sums, metrics)

    return accumulated


def stepping_per_call(train_fn: Callable, image_shape: Sequence[int]) -> Callable:
    """`fn(state, metric_sums, packed) -> (state, metric_sums)`: `train_fn` (as `accumulating` returns) on
    each step of a call in turn, from the call's batches packed as one uint8 array `(B, steps, R)`
    (`data.pipeline.pack_batches`), in one compiled program (`lax.scan`): the results of as many calls of
    one step, bit for bit. `image_shape`: one image's `(H, W, C)`."""

    def call(state: TrainState, metric_sums: Metrics, packed: jax.Array):
        per_step = jnp.moveaxis(packed, 1, 0)  # (steps, B, R): scan's axis first
        if per_step.shape[0] == 1:  # no loop to compile for a call of one step
            return train_fn(state, metric_sums, unpack_on_device(per_step[0], image_shape))

        def one_step(carry, rows):
            return train_fn(*carry, unpack_on_device(rows, image_shape)), None

        return lax.scan(one_step, (state, metric_sums), per_step)[0]

    return call
