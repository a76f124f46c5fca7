"""Optimizers and schedules: the registries, their settings, accumulation and skipping."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.tree_util import keystr, tree_flatten_with_path

from jaxcnn import models
from jaxcnn.models.bridge import linen_variables
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
        ({"weight_decay_on": "no_bias"}, "weight_decay_on must be one of 'all', 'kernels'"),
        ({"trust_coefficient": -0.1}, "trust_coefficient must be a finite number >= 0.0"),
    ],
)
def test_bad_settings_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        OptimizerSettings(**settings)


def test_unknown_optimizer_lists_the_registered_ones():
    with pytest.raises(ValueError, match="unknown optimizer name 'lion'; available: adam, adamw, lamb, lars"):
        create_optimizer("lion", 0.1, 10)


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


# A kernel (decayed under weight_decay_on="kernels") and a bias (not), both with nonzero norms.
PARAMS = {"w": np.array([[1.0, -2.0], [0.5, 3.0]]), "b": np.array([0.5, -1.0])}
GRADS = [
    {"w": np.array([[0.3, -0.1], [0.2, 0.4]]), "b": np.array([0.05, -0.2])},
    {"w": np.array([[-0.2, 0.6], [0.1, -0.3]]), "b": np.array([0.1, 0.3])},
]


def _updates(name, grads, **settings):
    """The updates of two steps of `create_optimizer(name, 0.1, ...)` from `PARAMS` (float32)."""
    tx = create_optimizer(name, 0.1, 10, OptimizerSettings(**settings))
    params = jax.tree.map(jnp.float32, PARAMS)
    state, applied = tx.init(params), []
    for grad in grads:
        updates, state = tx.update(jax.tree.map(jnp.float32, grad), state, params)
        params = optax.apply_updates(params, updates)
        applied.append(jax.tree.map(np.asarray, updates))
    return applied


def _trust_ratio(param, update, coefficient):
    """coefficient * ||param|| / ||update||, 1 where either norm is 0 (optax's `scale_by_trust_ratio`)."""
    p, u = np.linalg.norm(param), np.linalg.norm(update)
    return coefficient * p / u if p and u else 1.0


def _lars_reference(decayed, adapted, lr=0.1, weight_decay=0.01, coefficient=0.02, momentum=0.9):
    """LARS (You et al., 2017) in numpy: g + wd * w on `decayed` leaves, scaled by the trust ratio on
    `adapted` ones and by lr, then heavy-ball momentum on the scaled updates (optax's order)."""
    params, trace, applied = {k: v.copy() for k, v in PARAMS.items()}, None, []
    for grads in GRADS:
        updates = {}
        for k in params:
            g = grads[k] + (weight_decay * params[k] if k in decayed else 0.0)
            ratio = _trust_ratio(params[k], g, coefficient) if k in adapted else 1.0
            updates[k] = -lr * ratio * g
        trace = updates if trace is None else {k: updates[k] + momentum * trace[k] for k in updates}
        params = {k: params[k] + trace[k] for k in params}
        applied.append(trace)
    return applied


def _lamb_reference(decayed, lr=0.1, weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-6):
    """LAMB (You et al., 2020) in numpy: Adam's bias-corrected direction plus wd * w on `decayed`
    leaves, scaled per leaf by ||w|| / ||direction|| and by lr."""
    params, m, v, applied = {k: x.copy() for k, x in PARAMS.items()}, {}, {}, []
    for t, grads in enumerate(GRADS, start=1):
        updates = {}
        for k in params:
            m[k] = b1 * m.get(k, 0.0) + (1 - b1) * grads[k]
            v[k] = b2 * v.get(k, 0.0) + (1 - b2) * grads[k] ** 2
            direction = (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
            direction = direction + (weight_decay * params[k] if k in decayed else 0.0)
            updates[k] = -lr * _trust_ratio(params[k], direction, 1.0) * direction
        params = {k: params[k] + updates[k] for k in params}
        applied.append(updates)
    return applied


def _assert_updates_close(ours, reference):
    for step_ours, step_reference in zip(ours, reference, strict=True):
        for k in PARAMS:
            np.testing.assert_allclose(step_ours[k], step_reference[k], rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("weight_decay_on, decayed", [("all", {"w", "b"}), ("kernels", {"w"})])
def test_lars_matches_a_numpy_reference_and_adapts_only_the_decayed_parameters(weight_decay_on, decayed):
    ours = _updates(
        "lars",
        GRADS,
        weight_decay=0.01,
        weight_decay_on=weight_decay_on,
        trust_coefficient=0.02,
        momentum=0.9,
    )
    _assert_updates_close(ours, _lars_reference(decayed, adapted=decayed))


@pytest.mark.parametrize("weight_decay_on, decayed", [("all", {"w", "b"}), ("kernels", {"w"})])
def test_lamb_matches_a_numpy_reference(weight_decay_on, decayed):
    ours = _updates("lamb", GRADS, weight_decay=0.01, weight_decay_on=weight_decay_on)
    _assert_updates_close(ours, _lamb_reference(decayed))


@pytest.fixture(scope="module")
def resnet_params():
    """A CIFAR ResNet's parameter tree (convolutions, BatchNorms, the dense layer), every value 1."""
    model = models.create_nnx("resnet20", depth=8, widths=(4, 8, 8), input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
    return jax.tree.map(jnp.ones_like, linen_variables(model)["params"])


BUILT_IN = ["sgd", "momentum", "nesterov", "adam", "adamw", "lars", "lamb"]


@pytest.mark.parametrize("name", BUILT_IN)
def test_kernels_only_decay_skips_batch_norm_and_biases_in_every_optimizer(name, resnet_params):
    # Zero gradients and every weight 1: the update is the weight decay's alone, nonzero where weights decay.
    settings = OptimizerSettings(weight_decay=0.1, weight_decay_on="kernels")
    tx = create_optimizer(name, 0.1, 10, settings)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, resnet_params), tx.init(resnet_params), resnet_params)
    moved = {keystr(path): bool(jnp.any(u != 0)) for path, u in tree_flatten_with_path(updates)[0]}
    assert {path for path, decays in moved.items() if decays} == {
        p for p in moved if p.endswith("['kernel']")
    }
    assert moved["['fc']['kernel']"] and moved["['layer1_0']['conv1']['kernel']"]
    assert not any(
        moved[path] for path in ("['fc']['bias']", "['bn1']['scale']", "['layer3_0']['bn2']['bias']")
    )
