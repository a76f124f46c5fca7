"""The train state: parameters, optimizer state, BatchNorm statistics, RNG and step, for a model of
either Flax API.

An NNX model is trained natively: the state holds its `nnx.Param`s and `nnx.BatchStat`s as plain
dicts (the paths of its attributes) and `apply_fn` merges them back into the model inside `jax.jit`
(`models.bridge.nnx_apply`); a Linen module's variables are the same dicts and `apply_fn` is its
`apply`. Steps, checkpoints, ensembles and sharding see one kind of state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.training import train_state

from jaxcnn._validate import Settings, number, shape
from jaxcnn.models.bridge import linen_variables, nnx_apply


@dataclasses.dataclass(frozen=True)
class EMASettings(Settings):
    """`config.ema`: evaluate an exponential moving average of the weights when `decay` > 0 (e.g. 0.999).

    Early steps use the smaller rate (1 + s) / (10 + s), so the average does not stay anchored to the
    initial weights (`TrainState.update_ema`)."""

    decay: float = 0.0

    def __post_init__(self):
        number(self.decay, "decay", minimum=0.0, below=1.0)


class TrainState(train_state.TrainState):
    """Flax's TrainState plus `batch_stats` (empty dict for models without BatchNorm),
    `rng`, the run's base key as raw `uint32[2]` data (step `s` draws dropout from
    `fold_in(rng, s)`, so a resumed run draws exactly what an uninterrupted one would), and
    `ema_params`, a moving average of `params` (None unless `with_ema` started one)."""

    batch_stats: Any
    rng: jax.Array
    ema_params: Any = None

    def with_ema(self) -> TrainState:
        """This state with a moving average of the weights, starting at the current ones."""
        return self.replace(ema_params=jax.tree.map(jnp.copy, self.params))

    def update_ema(self, decay: float) -> TrainState:
        """`ema_params` moved toward `params`; early steps use the smaller rate (1 + s) / (10 + s)
        so the average does not stay anchored to the initial weights."""
        rate = jnp.minimum(decay, (1.0 + self.step) / (10.0 + self.step))
        ema = jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, self.ema_params, self.params)
        return self.replace(ema_params=ema)

    def for_eval(self) -> TrainState:
        """The state evaluation uses: the averaged weights when there are some."""
        return self if self.ema_params is None else self.replace(params=self.ema_params)

    def variables(self, params: Any = None) -> dict[str, Any]:
        """`{"params": ..., "batch_stats": ...}` for `apply_fn` (and a Linen model's `apply`)."""
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def initial_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(init, dropout, run)` keys of a model trained from `seed`, as raw key data."""
    return tuple(jax.random.split(jax.random.PRNGKey(seed), 3))


def create_train_state(
    model: nnx.Module | nn.Module,
    tx: optax.GradientTransformation,
    image_shape: Sequence[int] | None = None,
    seed: int = 0,
) -> TrainState:
    """A train state at step 0.

    Args:
      model: a Flax NNX module, trained from the weights it holds; or a Flax Linen module, initialised
        from `seed` on one zero image of `image_shape`.
      tx: the optimizer.
      image_shape: one image's `(H, W, C)`; needed for a Linen module.
      seed: the run's base key (dropout at step s draws from `fold_in(rng, s)`) and a Linen module's
        initialisation.
    """
    init_key, dropout_key, run_key = initial_keys(seed)
    variables: Mapping[str, Any]
    if isinstance(model, nnx.Module):
        variables, apply_fn = linen_variables(model), nnx_apply(model)
    elif isinstance(model, nn.Module):
        image_shape = shape(image_shape, "image_shape (H, W, C) of a Linen model")
        x = jnp.zeros((1, *image_shape), jnp.float32)
        variables = model.init({"params": init_key, "dropout": dropout_key}, x, train=False)
        apply_fn = model.apply
    else:
        raise TypeError(f"model must be a flax.nnx.Module or a flax.linen.Module, got {type(model).__name__}")
    state = TrainState.create(
        apply_fn=apply_fn,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        rng=run_key,
    )
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so every leaf can be sharded and saved
