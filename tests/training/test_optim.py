"""Optimizers and schedules from the config."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.training import create_learning_rate_schedule, create_optimizer, default_config


def _config(**overrides):
    config = default_config()
    for key, value in overrides.items():
        config[key] = value
    return config


def test_schedules():
    constant = create_learning_rate_schedule(_config(learning_rate=0.1), 100)
    assert float(constant(0)) == float(constant(99)) == pytest.approx(0.1)
    cosine = create_learning_rate_schedule(_config(schedule="cosine", learning_rate=0.1), 100)
    assert float(cosine(0)) == pytest.approx(0.1) and float(cosine(50)) == pytest.approx(0.05)
    assert float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    warm = create_learning_rate_schedule(
        _config(schedule="warmup_cosine", learning_rate=0.1, warmup_steps=10), 100
    )
    assert (
        float(warm(0)) == 0.0
        and float(warm(5)) == pytest.approx(0.05)
        and float(warm(10)) == pytest.approx(0.1)
    )


def test_warmup_longer_than_run():
    with pytest.raises(ValueError, match="warmup_steps"):
        create_learning_rate_schedule(_config(schedule="warmup_cosine", warmup_steps=100), 100)


def _one_update(config, grad=1.0, param=2.0):
    tx = create_optimizer(config, 10)
    params = {"w": jnp.asarray(param)}
    updates, _ = tx.update({"w": jnp.asarray(grad)}, tx.init(params), params)
    return float(updates["w"])


def test_sgd_momentum_nesterov_first_steps():
    assert _one_update(_config(optimizer="sgd", learning_rate=0.1)) == pytest.approx(-0.1)
    assert _one_update(_config(optimizer="momentum", learning_rate=0.1)) == pytest.approx(-0.1)
    # Nesterov's first step: lr * (g + momentum * g)
    assert _one_update(_config(optimizer="nesterov", learning_rate=0.1, momentum=0.9)) == pytest.approx(-0.19)


def test_l2_weight_decay_is_added_to_the_gradient():
    update = _one_update(_config(optimizer="sgd", learning_rate=0.1, weight_decay=0.5), grad=1.0, param=2.0)
    assert update == pytest.approx(-0.1 * (1.0 + 0.5 * 2.0))


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_adam_first_step_is_lr_sign(name):
    assert _one_update(_config(optimizer=name, learning_rate=0.01, weight_decay=0.0)) == pytest.approx(
        -0.01, rel=1e-4
    )


def test_adamw_decay_is_decoupled():
    tx = create_optimizer(_config(optimizer="adamw", learning_rate=0.1, weight_decay=0.5), 10)
    reference = optax.adamw(0.1, weight_decay=0.5)
    params, grads = {"w": jnp.asarray(2.0)}, {"w": jnp.asarray(1.0)}
    ours, _ = tx.update(grads, tx.init(params), params)
    theirs, _ = reference.update(grads, reference.init(params), params)
    np.testing.assert_allclose(ours["w"], theirs["w"])
