"""Optimizers and learning-rate schedules from the config, all from optax."""

from __future__ import annotations

import ml_collections
import optax


def create_learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """`constant`, `cosine` (to 0 at `total_steps`) or `warmup_cosine` (linear warm-up first)."""
    if config.schedule == "constant":
        return optax.constant_schedule(config.learning_rate)
    if config.schedule == "cosine":
        return optax.cosine_decay_schedule(config.learning_rate, decay_steps=max(total_steps, 1))
    if config.schedule == "warmup_cosine":
        if config.warmup_steps >= total_steps:
            raise ValueError(
                f"config.warmup_steps ({config.warmup_steps}) must be below the run's {total_steps} steps"
            )
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0,
            peak_value=config.learning_rate,
            warmup_steps=config.warmup_steps,
            decay_steps=total_steps,
        )
    raise ValueError(f"config.schedule must be constant, cosine or warmup_cosine, got {config.schedule!r}")


def create_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
    """sgd, momentum, nesterov, adam or adamw with the configured schedule.

    `weight_decay` is decoupled for adamw and an L2 term added to the gradient (PyTorch's
    `weight_decay`) for the others. With `skip_nonfinite_steps` > 0, updates from non-finite
    gradients are skipped (`optax.apply_if_finite`).
    """
    tx = _base_optimizer(config, create_learning_rate_schedule(config, total_steps))
    if config.skip_nonfinite_steps:
        return optax.apply_if_finite(tx, max_consecutive_errors=config.skip_nonfinite_steps)
    return tx


def _base_optimizer(config: ml_collections.ConfigDict, lr: optax.Schedule) -> optax.GradientTransformation:
    if config.optimizer == "adamw":
        return optax.adamw(lr, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        base = optax.adam(lr)
    elif config.optimizer == "sgd":
        base = optax.sgd(lr)
    elif config.optimizer in ("momentum", "nesterov"):
        base = optax.sgd(lr, momentum=config.momentum, nesterov=config.optimizer == "nesterov")
    else:
        raise ValueError(
            f"config.optimizer must be sgd, momentum, nesterov, adam or adamw, got {config.optimizer!r}"
        )
    if config.weight_decay:
        return optax.chain(optax.add_decayed_weights(config.weight_decay), base)
    return base
