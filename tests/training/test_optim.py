"""Optimizers and schedules: the registries, their settings, accumulation and skipping."""

import logging

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.training import (
    OPTIMIZERS,
    SCHEDULES,
    OptimizerSettings,
    create_learning_rate_schedule,
    create_optimizer,
    default_config,
    validate_config,
)


def test_schedules():
    constant = create_learning_rate_schedule(0.1, 100)
    assert float(constant(0)) == float(constant(99)) == pytest.approx(0.1)
    cosine = create_learning_rate_schedule(0.1, 100, OptimizerSettings(schedule="cosine"))
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(50)) == pytest.approx(0.05)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    warm = create_learning_rate_schedule(
        0.1, 100, OptimizerSettings(schedule="warmup_cosine", warmup_steps=10)
    )
    assert (
        float(warm(0)) == 0.0
        and float(warm(5)) == pytest.approx(0.05)
        and float(warm(10)) == pytest.approx(0.1)
    )


def test_a_warmup_longer_than_the_run_is_shortened_to_a_tenth_with_a_notice(caplog):
    settings = OptimizerSettings(schedule="warmup_cosine", warmup_steps=100)
    with caplog.at_level(logging.WARNING):
        warm = create_learning_rate_schedule(0.1, 20, settings)
    assert "warmup_steps (100) is not below the run's 20 updates: warming up over 2 instead" in caplog.text
    assert (
        float(warm(0)) == 0.0
        and float(warm(1)) == pytest.approx(0.05)
        and float(warm(2)) == pytest.approx(0.1)
    )


def _one_update(name, learning_rate, grad=1.0, param=2.0, **settings):
    tx = create_optimizer(name, learning_rate, 10, OptimizerSettings(**settings))
    params = {"w": jnp.asarray(param)}
    updates, _ = tx.update({"w": jnp.asarray(grad)}, tx.init(params), params)
    return float(updates["w"])


def test_sgd_momentum_nesterov_first_steps():
    assert _one_update("sgd", 0.1) == pytest.approx(-0.1)
    assert _one_update("momentum", 0.1) == pytest.approx(-0.1)
    # Nesterov's first step: lr * (g + momentum * g)
    assert _one_update("nesterov", 0.1, momentum=0.9) == pytest.approx(-0.19)


def test_l2_weight_decay_is_added_to_the_gradient():
    update = _one_update("sgd", 0.1, grad=1.0, param=2.0, weight_decay=0.5)
    assert update == pytest.approx(-0.1 * (1.0 + 0.5 * 2.0))


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_first_step_is_lr_sign(name):
    assert _one_update(name, 0.01) == pytest.approx(-0.01, rel=1e-4)


def test_adamw_decay_is_decoupled():
    tx = create_optimizer("adamw", 0.1, 10, OptimizerSettings(weight_decay=0.5))
    reference = optax.adamw(0.1, weight_decay=0.5)
    params, grads = {"w": jnp.asarray(2.0)}, {"w": jnp.asarray(1.0)}
    ours, _ = tx.update(grads, tx.init(params), params)
    theirs, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(ours["w"], theirs["w"])


def test_accumulation_averages_k_gradients_into_one_update_and_counts_updates_in_the_schedule():
    settings = OptimizerSettings(accumulate_steps=2, schedule="cosine")
    tx = create_optimizer("sgd", 1.0, 4, settings)  # 4 batches: 2 updates, the cosine over 2 of them
    params = {"w": jnp.asarray(0.0)}
    state = tx.init(params)
    applied = []
    for grad in (1.0, 3.0, 2.0, 6.0):
        updates, state = tx.update({"w": jnp.asarray(grad)}, state, params)
        applied.append(float(updates["w"]))
    # Batches 1 and 3 only accumulate; 2 and 4 apply the mean gradient at the schedule's updates 0 and 1.
    assert applied == pytest.approx([0.0, -2.0 * 1.0, 0.0, -4.0 * 0.5])


def test_non_finite_updates_are_skipped():
    tx = create_optimizer("sgd", 0.1, 10, OptimizerSettings(skip_nonfinite_steps=2))
    params = {"w": jnp.asarray(1.0)}
    updates, state = tx.update({"w": jnp.asarray(jnp.nan)}, tx.init(params), params)
    assert float(updates["w"]) == 0.0 and int(state.notfinite_count) == 1


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"momentum": 1.0}, "momentum must be a finite number >= 0.0 and < 1.0"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"schedule": "linear"}, "schedule must be one of 'constant', 'cosine', 'warmup_cosine'"),
        ({"accumulate_steps": 0}, "accumulate_steps must be an int >= 1"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSettings(**settings)


def test_unknown_optimizer_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown optimizer name 'lamb'; available: adam, adamw, momentum"):
        create_optimizer("lamb", 0.1, 10)


def test_a_registered_optimizer_and_schedule_are_accepted_by_the_config():
    OPTIMIZERS.register(
        "test_signsgd",
        lambda lr, settings: optax.chain(optax.scale_by_sign(), optax.scale_by_learning_rate(lr)),
    )
    SCHEDULES.register(
        "test_step", lambda peak, total, settings: optax.piecewise_constant_schedule(peak, {5: 0.1})
    )
    config = default_config()
    config.optimizer, config.optim.schedule = "test_signsgd", "test_step"
    validate_config(config)
    schedule = create_learning_rate_schedule(1.0, 10, OptimizerSettings(schedule="test_step"))
    assert float(schedule(4)) == 1.0 and float(schedule(6)) == pytest.approx(0.1)
    assert _one_update("test_signsgd", 0.1) == pytest.approx(-0.1)
