"""The train state: parameters, optimizer state, BatchNorm statistics, RNG and step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


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

    def variables(self, params=None) -> dict:
        """`{"params": ..., "batch_stats": ...}` for `model.apply`."""
        variables = {"params": self.params if params is None else params}
        if self.batch_stats:
            variables["batch_stats"] = self.batch_stats
        return variables


def create_train_state(
    model: nn.Module, tx: optax.GradientTransformation, image_shape: Sequence[int], seed: int
) -> TrainState:
    """Initialises `model` on one zero image of `image_shape` `(H, W, C)` with `seed`."""
    init_key, dropout_key, run_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    variables = model.init(
        {"params": init_key, "dropout": dropout_key}, jnp.zeros((1, *image_shape), jnp.float32), train=False
    )
    state = TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
        rng=run_key,
    )
    return state.replace(step=jnp.zeros((), jnp.int32))  # an array, so every leaf can be sharded and saved
