"""none, data (jit + NamedSharding) and pmap give the same training, on 8 simulated CPU devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.parallel import DataParallel, Pmap, SingleDevice, create_strategy
from jaxcnn.training import create_model, create_train_state
from jaxcnn.training.steps import accumulating, eval_step, train_step, zero_metrics

GLOBAL_BATCH = 16


def test_eight_simulated_devices():
    assert jax.device_count() == 8


def _batches(steps, seed=0):
    rng = np.random.default_rng(seed)
    return [
        {
            "image": rng.standard_normal((GLOBAL_BATCH, 12, 12, 3)).astype(np.float32),
            "label": rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32),
            "mask": np.ones(GLOBAL_BATCH, np.float32),
        }
        for _ in range(steps)
    ]


def _run(strategy, steps=4):
    """Per-step mean losses and the final eval metrics of resnet20 (BatchNorm, the NNX model as the loop
    trains it) under `strategy`."""
    model = create_model("resnet20", 10, (12, 12, 3), seed=0, axis_name=strategy.axis_name)
    state = create_train_state(model, optax.sgd(0.01, momentum=0.9), seed=0)
    train = strategy.compile_train(accumulating(functools.partial(train_step, axis_name=strategy.axis_name)))
    evaluate = strategy.compile_eval(functools.partial(eval_step, axis_name=strategy.axis_name))
    state = strategy.put_state(state)
    losses = []
    for batch in _batches(1) * steps:  # one batch again and again: the loss must fall
        sums = strategy.put_state(zero_metrics())
        state, sums = train(state, sums, strategy.put_batch(batch))
        host = strategy.host_value(sums)
        losses.append(float(host["loss"]) / float(host["count"]))
    final = strategy.host_value(evaluate(state, strategy.put_batch(_batches(1, seed=1)[0])))
    return np.asarray(losses), final, strategy.host_state(state)


@pytest.fixture(scope="module")
def single():
    return _run(SingleDevice())


@pytest.mark.parametrize("name", ["data", "pmap"])
def test_same_losses_batch_stats_and_eval_as_one_device(single, name):
    losses, final, state = _run(create_strategy(name))
    np.testing.assert_allclose(losses, single[0], rtol=1e-5)
    assert losses[-1] < losses[0]
    for key in ("loss", "correct", "count"):
        np.testing.assert_allclose(final[key], single[1][key], rtol=1e-5)
    # Float32 rounding: the sharded gradients differ from one device's by ~3e-6 relative (XLA's and
    # oneDNN's alike), and four momentum steps through BatchNorm grow that to ~1e-5 in the statistics.
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
        state.batch_stats,
        single[2].batch_stats,
    )


def test_data_parallel_shards_the_batch_and_replicates_the_state():
    strategy = DataParallel()
    batch = strategy.put_batch(_batches(1)[0])
    assert batch["image"].sharding.spec[0] == "batch"
    assert len(batch["image"].addressable_shards) == 8
    assert batch["image"].addressable_shards[0].data.shape == (GLOBAL_BATCH // 8, 12, 12, 3)
    state = strategy.put_state({"w": jnp.ones(3)})
    assert state["w"].sharding.is_fully_replicated


def test_pmap_stacks_one_copy_per_device():
    strategy = Pmap()
    state = strategy.put_state({"w": jnp.arange(3.0)})
    assert state["w"].shape == (8, 3)
    np.testing.assert_array_equal(strategy.host_state(state)["w"], np.arange(3.0))
    assert strategy.put_batch(_batches(1)[0])["image"].shape == (8, 2, 12, 12, 3)


@pytest.mark.parametrize("name", ["data", "pmap"])
def test_batch_not_divisible_by_devices_is_a_clear_error(name):
    with pytest.raises(ValueError, match="batch_size 12 must be divisible by the number of devices \\(8\\)"):
        create_strategy(name).check_batch_size(12)


def test_unknown_mode_lists_the_registered_ones():
    with pytest.raises(
        ValueError, match="unknown parallel strategy name 'model'; available: data, none, pmap"
    ):
        create_strategy("model")
