"""vmap ensembles: member i trains exactly like a single model from seed i; metrics, strategies, the loop."""

import functools
import shutil

import jax
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.parallel import create_strategy
from jaxcnn.training import (
    create_ensemble_state,
    create_model,
    create_train_state,
    default_config,
    ensemble_eval_step,
    ensemble_member,
    ensemble_predict,
    ensemble_size,
    ensemble_train_step,
    predict,
    read_metrics,
    train_and_evaluate,
    train_step,
    validate_config,
)
from jaxcnn.training.steps import accumulating, zero_metrics

SEEDS = (3, 4, 5)
SHAPE = (8, 8, 1)


def _batch(seed=0, n=16):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.standard_normal((n, *SHAPE)).astype(np.float32),
        "label": rng.integers(0, 10, n).astype(np.int32),
        "mask": np.ones(n, np.float32),
    }


def _model(**kwargs):
    return models.create("compact", features=(8, 16), **kwargs)  # BatchNorm and dropout


def _nnx_model(seed):
    return create_model("compact", 10, SHAPE, seed, model_kwargs={"features": (8, 16)})


@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_member_i_trains_like_a_single_model_from_seed_i(api):
    tx = optax.adam(1e-2)
    model = _nnx_model if api == "nnx" else _model()
    states = create_ensemble_state(model, tx, SHAPE, SEEDS)
    assert ensemble_size(states) == 3 and states.step.shape == ()
    step = jax.jit(ensemble_train_step)
    for i in range(3):
        states, _ = step(states, _batch(i))
    assert int(states.step) == 3
    for member, seed in enumerate(SEEDS):
        single = create_train_state(_nnx_model(seed) if api == "nnx" else _model(), tx, SHAPE, seed)
        for i in range(3):
            single, _ = jax.jit(train_step)(single, _batch(i))
        got = ensemble_member(states, member)
        for field in ("params", "batch_stats", "opt_state"):
            jax.tree.map(  # XLA's vmapped (grouped) convolutions sum in another order: ~1e-6 after 3 steps
                lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                getattr(got, field),
                getattr(single, field),
            )
    # Different seeds really give different members.
    a, b = (jax.tree.leaves(ensemble_member(states, i).params)[0] for i in (0, 1))
    assert not np.allclose(a, b)


def test_metrics_are_member_sums_and_the_accuracy_of_averaged_logits():
    states = create_ensemble_state(_model(), optax.sgd(0.1), SHAPE, SEEDS)
    batch = _batch(1, n=32)
    metrics = jax.jit(ensemble_eval_step)(states, batch)
    logits = [
        ensemble_member(states, i).apply_fn(ensemble_member(states, i).variables(), batch["image"])
        for i in range(3)
    ]
    mean = np.mean(logits, axis=0)
    np.testing.assert_allclose(ensemble_predict(states, batch["image"]), mean, rtol=1e-5, atol=1e-6)
    assert float(metrics["ensemble_correct"]) == np.sum(mean.argmax(-1) == batch["label"])
    assert float(metrics["ensemble_count"]) == 32 and float(metrics["count"]) == 3 * 32
    assert float(metrics["correct"]) == sum(np.sum(x.argmax(-1) == batch["label"]) for x in logits)
    # With flip and shift, each member scores its own view-averaged logits, the ensemble their mean.
    flipped = jax.jit(functools.partial(ensemble_eval_step, flip=True, shift=1))(states, batch)
    members = [predict(ensemble_member(states, i), batch["image"], flip=True, shift=1) for i in range(3)]
    assert float(flipped["correct"]) == sum(np.sum(x.argmax(-1) == batch["label"]) for x in members)
    mean = np.mean(members, axis=0)
    assert float(flipped["ensemble_correct"]) == np.sum(mean.argmax(-1) == batch["label"])


def _strategy_run(name, steps=3):
    strategy = create_strategy(name)
    model = _model(axis_name=strategy.axis_name, dropout=0.0)
    states = create_ensemble_state(model, optax.sgd(0.05, momentum=0.9), SHAPE, SEEDS)
    train = strategy.compile_train(
        accumulating(functools.partial(ensemble_train_step, axis_name=strategy.axis_name))
    )
    states, sums = strategy.put_state(states), strategy.put_state(zero_metrics(ensemble=True))
    for i in range(steps):
        states, sums = train(states, sums, strategy.put_batch(_batch(i)))
    return strategy.host_value(sums), strategy.host_state(states)


@pytest.fixture(scope="module")
def one_device_run():
    return _strategy_run("none")


@pytest.mark.parametrize("name", ["data", "pmap"])
def test_ensembles_run_under_data_and_pmap_like_on_one_device(name, one_device_run):
    single_sums, single_states = one_device_run
    sums, states = _strategy_run(name)
    for key in single_sums:
        np.testing.assert_allclose(sums[key], single_sums[key], rtol=1e-5)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-4, atol=1e-6)
    jax.tree.map(close, states.params, single_states.params)


def test_seeds_must_be_ints():
    with pytest.raises(ValueError, match="seeds must be a non-empty sequence of ints"):
        create_ensemble_state(_model(), optax.sgd(0.1), SHAPE, [])


@pytest.mark.parametrize("value", [0, -1])
def test_ensemble_size_is_validated(value):
    config = default_config()
    config.ensemble.size = value
    with pytest.raises(ValueError, match="config.ensemble.size"):
        validate_config(config)


def _config():
    config = default_config()
    config.model, config.dataset, config.batch_size = "simple_cnn", "digits", 32
    config.optimizer, config.learning_rate = "adam", 2e-3
    config.num_steps, config.log_every, config.checkpoint_every = 10, 5, 5
    config.ensemble.size = 3
    return config


def test_the_loop_trains_an_ensemble_logs_its_accuracy_and_resumes(tmp_path):
    result = train_and_evaluate(_config(), tmp_path, handle_signals=False)
    lines = read_metrics(tmp_path / "metrics.jsonl")
    assert all("ensemble_accuracy" in line for line in lines)
    assert result.ensemble_test_accuracy == lines[-1]["ensemble_accuracy"]
    assert "ensemble test accuracy" in result.describe()

    shutil.rmtree(tmp_path / "checkpoints" / "10")
    resumed = train_and_evaluate(_config(), tmp_path, handle_signals=False)
    assert resumed.resumed_from == 5
    strip = lambda rows: [{k: v for k, v in row.items() if k != "examples_per_sec"} for row in rows]
    assert strip(read_metrics(tmp_path / "metrics.jsonl")) == strip(lines)
