"""Per-example gradients against a Python loop; DP-SGD (optax's clipping and noise) in the step and loop."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn.training import (
    create_train_state,
    default_config,
    dp_optimizer,
    dp_train_step,
    per_example_grads,
    read_metrics,
    train_and_evaluate,
    validate_config,
)
from jaxcnn.training.steps import cross_entropy_loss

SHAPE = (8, 8, 1)


def _batch(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.standard_normal((n, *SHAPE)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, n), jnp.int32),
        "mask": jnp.ones(n, jnp.float32),
    }


def _loop_grads(state, batch):
    """The reference: one `jax.grad` per example, in eval mode."""

    def loss(params, image, label):
        logits = state.apply_fn(state.variables(params), image[None], train=False)
        return cross_entropy_loss(logits, label[None])[0]

    grad = jax.jit(jax.grad(loss))
    grads = [grad(state.params, x, y) for x, y in zip(batch["image"], batch["label"])]
    return jax.tree.map(lambda *g: jnp.stack(g), *grads)


@pytest.mark.parametrize(
    "name, kwargs, api",
    [
        ("simple_cnn", {}, "linen"),
        ("compact", {"features": (8, 16)}, "linen"),
        ("compact", {"features": (8, 16)}, "nnx"),
    ],
)
def test_per_example_grads_equal_a_loop_of_single_example_grads(name, kwargs, api):
    """simple_cnn has no BatchNorm; compact's BatchNorm runs in eval mode on its running statistics. The
    module is a Linen one or an NNX model (whose own BatchNorm statistics are replaced by the state's)."""
    if api == "nnx":
        model = models.create_nnx(name, input_shape=SHAPE, rngs=nnx.Rngs(0), **kwargs)
        state = create_train_state(model, optax.sgd(0.1), seed=0)
    else:
        model = models.create(name, **kwargs)
        state = create_train_state(model, optax.sgd(0.1), SHAPE, seed=0)
    rng = np.random.default_rng(1)  # running statistics other than the initial (0, 1)
    state = state.replace(
        batch_stats=jax.tree.map(lambda a: a + rng.uniform(0.1, 0.5, a.shape), state.batch_stats)
    )
    batch = _batch()
    expected = _loop_grads(state, batch)
    # From the module (from a state: the DP tests); example 2 is masked out, so its gradient is 0.
    grads_fn = jax.jit(
        lambda params, batch: per_example_grads(model, params, batch, batch_stats=state.batch_stats)
    )
    got = grads_fn(state.params, {**batch, "mask": (jnp.arange(4) != 2).astype(jnp.float32)})
    assert jax.tree.leaves(got)[0].shape[0] == 4
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    jax.tree.map(lambda a, b: close(a[np.array([0, 1, 3])], b[np.array([0, 1, 3])]), got, expected)
    assert all(float(jnp.abs(leaf[2]).max()) == 0 for leaf in jax.tree.leaves(got))


def test_train_mode_with_batchnorm_and_bad_models_are_refused():
    state = create_train_state(models.create("compact", features=(8, 16)), optax.sgd(0.1), SHAPE, seed=0)
    with pytest.raises(ValueError, match="BatchNorm"):
        per_example_grads(state, state.params, _batch(), train=True)
    with pytest.raises(TypeError, match="model_or_state"):
        per_example_grads("lenet5", state.params, _batch())


def _dp_state(clip, noise, lr=1.0):
    tx = dp_optimizer(optax.sgd(lr), clip_norm=clip, noise_multiplier=noise, seed=0)
    return create_train_state(models.create("simple_cnn"), tx, SHAPE, seed=0)


def _global_norm(tree):
    return float(optax.tree.norm(tree))


def test_dp_step_without_noise_is_the_clipped_mean_gradient():
    batch = _batch(8)
    state = _dp_state(clip=0.05, noise=0.0)
    new, metrics = jax.jit(dp_train_step)(state, batch)
    update = jax.tree.map(jnp.subtract, state.params, new.params)  # lr 1: the aggregated gradient
    grads = jax.jit(per_example_grads)(state, state.params, batch)  # simple_cnn: train = eval mode
    norms = np.sqrt(sum(np.sum(np.square(g).reshape(8, -1), axis=1) for g in jax.tree.leaves(grads)))
    assert norms.min() > 0.05  # every example is clipped
    factors = jnp.asarray(np.minimum(1.0, 0.05 / norms))
    expected = jax.tree.map(lambda g: jnp.mean(g * factors.reshape(-1, *[1] * (g.ndim - 1)), 0), grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), update, expected)
    assert _global_norm(update) <= 0.05 * (1 + 1e-5)  # the mean of clipped gradients stays within the bound
    assert float(metrics["count"]) == 8 and np.isfinite(float(metrics["loss"]))


def _aggregate(per_example, clip, noise):
    """optax's DP aggregation (via dp_optimizer, with sgd(1)) of `per_example` gradients."""
    tx = dp_optimizer(optax.sgd(1.0), clip_norm=clip, noise_multiplier=noise, seed=0)
    updates, _ = tx.update(per_example, tx.init(jax.tree.map(lambda g: g[0], per_example)))
    return jax.tree.map(jnp.negative, updates)


def test_dp_aggregation_with_a_large_bound_and_no_noise_is_the_mean_gradient():
    grads = {"w": jnp.asarray(np.random.default_rng(0).standard_normal((8, 30, 20)), jnp.float32)}
    np.testing.assert_allclose(_aggregate(grads, 1e6, 0.0)["w"], grads["w"].mean(0), rtol=1e-5, atol=1e-7)


def test_dp_noise_has_std_clip_times_multiplier_over_batch_size():
    zeros = {"w": jnp.zeros((8, 300, 100)), "b": jnp.zeros((8, 100))}
    noise = np.concatenate([np.ravel(leaf) for leaf in jax.tree.leaves(_aggregate(zeros, 1.0, 2.0))])
    assert np.std(noise) == pytest.approx(1.0 * 2.0 / 8, rel=0.03)
    assert abs(np.mean(noise)) < 0.01


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"dp.clip_norm": -1.0}, "config.dp.clip_norm"),
        ({"dp.noise_multiplier": -0.5}, "config.dp.noise_multiplier"),
        ({"dp.noise_multiplier": 1.0}, "config.dp.noise_multiplier > 0 needs clip_norm > 0"),
        ({"dp.clip_norm": 1.0, "parallel": "pmap"}, 'config.dp.clip_norm .* config.parallel "none"'),
        ({"dp.clip_norm": 1.0, "parallel": "data"}, 'config.dp.clip_norm .* config.parallel "none"'),
        ({"dp.clip_norm": 1.0, "ensemble.size": 2}, "config.dp.clip_norm .* config.ensemble.size 1"),
    ],
)
def test_dp_config_is_validated(overrides, match):
    config = default_config()
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=match):
        validate_config(config)


def _config(**overrides):
    config = default_config()
    config.model, config.dataset, config.batch_size = "simple_cnn", "digits", 16
    config.optimizer, config.learning_rate = "sgd", 0.5
    config.num_steps, config.log_every, config.checkpoint_every = 4, 2, 2
    config.dp.clip_norm, config.dp.noise_multiplier = 1.0, 0.5
    config.update(overrides)
    return config


def test_the_loop_trains_with_dp_sgd_and_resumes_with_the_same_noise(tmp_path):
    train_and_evaluate(_config(), tmp_path, handle_signals=False)
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert all(np.isfinite(line["loss"]) for line in lines)
    shutil.rmtree(tmp_path / "checkpoints" / "4")
    assert train_and_evaluate(_config(), tmp_path, handle_signals=False).resumed_from == 2
    strip = lambda rows: [{k: v for k, v in row.items() if k != "examples_per_sec"} for row in rows]
    assert strip(read_metrics(tmp_path / "metrics.jsonl")) == strip(lines)


def test_the_loop_refuses_dp_sgd_for_a_batchnorm_model(tmp_path):
    with pytest.raises(ValueError, match="config.dp.clip_norm .* BatchNorm"):
        train_and_evaluate(_config(model="compact"), tmp_path, handle_signals=False)
