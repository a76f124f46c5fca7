"""Ensembles with `vmap`: K models, each from its own seed, trained in one step on the same batches.

An ensemble state is a `TrainState` whose params, optimizer state, BatchNorm statistics and RNG
carry a leading member axis `(K, ...)`; `step` is shared (a scalar), so checkpoints, resume and
the loop treat an ensemble like one model.

    states = create_ensemble_state(model, optax.adam(1e-3), (28, 28, 1), seeds=range(8))
    states, metrics = jax.jit(ensemble_train_step)(states, batch)
    logits = ensemble_predict(states, images)          # (N, num_classes): the members' mean
    single = ensemble_member(states, 3)                 # a plain TrainState (seed 3)

Member i computes exactly what a single model from seed i would on the same batches.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax import lax

from jaxcnn._validate import Settings, integer, is_int
from jaxcnn.training.state import TrainState, create_train_state
from jaxcnn.training.steps import Metrics, eval_step_outputs, train_step_outputs

_MEMBER_FIELDS = ("params", "opt_state", "batch_stats", "rng")


@dataclasses.dataclass(frozen=True)
class EnsembleSettings(Settings):
    """`config.ensemble`: `size` > 1 trains that many models in one vmapped step, member i from seed
    `config.seed + i`, on the batches of `config.seed`; metrics add `ensemble_accuracy` (of the members'
    averaged logits)."""

    size: int = 1

    def __post_init__(self):
        integer(self.size, "size", minimum=1)


def _member_axes(states: TrainState) -> TrainState:
    """The `vmap` axes of an ensemble state: 0 for every member field, None (shared) for `step`."""
    return states.replace(step=None, **{field: 0 for field in _MEMBER_FIELDS})


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Single-model states (same model, optimizer and step) -> one ensemble state."""
    if not states:
        raise ValueError("stack_states needs at least one state")
    members = {
        field: jax.tree.map(lambda *leaves: jnp.stack(leaves), *(getattr(s, field) for s in states))
        for field in _MEMBER_FIELDS
    }
    return states[0].replace(**members)


def create_ensemble_state(
    model: nn.Module | Callable[[int], nnx.Module | nn.Module],
    tx: optax.GradientTransformation,
    image_shape: Sequence[int] | None,
    seeds: Iterable[int],
) -> TrainState:
    """An ensemble, member i as `create_train_state(..., seed=seeds[i])`: of a Linen `model`, initialised
    from each seed, or of the NNX models `model(seed)` returns (e.g. `lambda seed:
    models.create_nnx("lenet5", rngs=nnx.Rngs(seed))`)."""
    seeds = list(seeds)
    if not seeds or not all(map(is_int, seeds)):
        raise ValueError(f"seeds must be a non-empty sequence of ints, got {seeds!r}")
    member = (lambda seed: model) if isinstance(model, nn.Module) else model
    return stack_states([create_train_state(member(seed), tx, image_shape, seed) for seed in seeds])


def ensemble_size(states: TrainState) -> int:
    """K, the number of members."""
    return jax.tree.leaves(states.params)[0].shape[0]


def ensemble_member(states: TrainState, index: int) -> TrainState:
    """Member `index` as a plain `TrainState`."""
    return states.replace(**{field: jax.tree.map(lambda a: a[index], getattr(states, field))
                             for field in _MEMBER_FIELDS})  # fmt: skip


def _with_ensemble_metrics(
    metrics: Metrics, logits: jax.Array, batch: dict, axis_name: str | None
) -> Metrics:
    """Members' metric sums `(K,)` added up, plus the correct predictions of the averaged logits."""
    totals = jax.tree.map(lambda m: jnp.sum(m, axis=0), metrics)
    mean_logits = jnp.mean(logits.astype(jnp.float32), axis=0)
    correct = (jnp.argmax(mean_logits, -1) == batch["label"]).astype(jnp.float32) * batch["mask"]
    ensemble = {"ensemble_correct": jnp.sum(correct), "ensemble_count": jnp.sum(batch["mask"])}
    if axis_name is not None:
        ensemble = lax.psum(ensemble, axis_name)
    return {**totals, **ensemble}


def ensemble_train_step(
    states: TrainState, batch: dict, *, label_smoothing: float = 0.0, axis_name: str | None = None
) -> tuple[TrainState, Metrics]:
    """One optimizer step of every member on the same `batch` (`image` `(B, H, W, C)`, `label` `(B,)`,
    `mask` `(B,)`), vmapped over the member axis.

    Metrics are sums over members and examples (`loss`, `correct`, `count`: their ratios are the
    members' mean loss and accuracy) plus `ensemble_correct` / `ensemble_count`: predictions of the
    members' averaged logits (taken before the update, like the members' own accuracy).
    """
    axes = _member_axes(states)

    def step(state, batch):
        return train_step_outputs(state, batch, label_smoothing=label_smoothing, axis_name=axis_name)

    states, metrics, logits = jax.vmap(step, in_axes=(axes, None), out_axes=(axes, 0, 0))(states, batch)
    return states, _with_ensemble_metrics(metrics, logits, batch, axis_name)


def ensemble_eval_step(
    states: TrainState, batch: dict, *, axis_name: str | None = None, flip: bool = False, shift: int = 0
) -> Metrics:
    """Eval-mode metric sums of every member on `batch`, with `ensemble_train_step`'s keys (`flip`,
    `shift`: each member's logits averaged over test-time views, see `training.predict`)."""
    member_outputs = functools.partial(eval_step_outputs, flip=flip, shift=shift)
    metrics, logits = jax.vmap(member_outputs, in_axes=(_member_axes(states), None))(states, batch)
    if axis_name is not None:
        metrics = lax.psum(metrics, axis_name)
    return _with_ensemble_metrics(metrics, logits, batch, axis_name)


def ensemble_predict(states: TrainState, images: jax.Array) -> jax.Array:
    """The members' averaged eval-mode logits `(N, num_classes)` for `images` `(N, H, W, C)`."""
    logits = jax.vmap(
        lambda s: s.apply_fn(s.variables(), images, train=False), in_axes=(_member_axes(states),)
    )(states)
    return jnp.mean(logits.astype(jnp.float32), axis=0)
