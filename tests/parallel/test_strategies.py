"""none, data (jit + NamedSharding), fsdp (sharded state) and pmap give the same training, on 8 simulated CPU
devices; fsdp's sharded checkpoints resume bit-identically and restore under another device count."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from jaxcnn.parallel import DataParallel, FullySharded, Pmap, SingleDevice, create_strategy
from jaxcnn.training import Checkpoints, ComputeSettings, create_model, create_train_state
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


def _initial_state(strategy):
    """resnet20 (BatchNorm, the NNX model as the loop trains it) under XLA's lowering everywhere: "auto"
    picks per batch size, and a device's share of the batch can get another lowering than the whole batch
    (other roundings, not a fault)."""
    compute = ComputeSettings(impl="xla")
    model = create_model("resnet20", 10, (12, 12, 3), seed=0, compute=compute, axis_name=strategy.axis_name)
    return create_train_state(model, optax.sgd(0.01, momentum=0.9), seed=0)


def _train(strategy, state, steps):
    """`steps` steps of one batch again and again (the loss must fall): the state, per-step mean losses."""
    train = strategy.compile_train(accumulating(functools.partial(train_step, axis_name=strategy.axis_name)))
    losses = []
    for batch in _batches(1) * steps:
        sums = strategy.put_state(zero_metrics())
        state, sums = train(state, sums, strategy.put_batch(batch))
        host = strategy.host_value(sums)
        losses.append(float(host["loss"]) / float(host["count"]))
    return state, np.asarray(losses)


def _run(strategy, steps=3):
    """Per-step mean losses and the final eval metrics of resnet20 (BatchNorm, the NNX model as the loop
    trains it) under `strategy`. Three steps: the devices' partial sums of a gradient add up in another order
    than one device's sum, and the loss of this one repeated batch falls so fast that the difference grows
    each step (on an AVX-512 host the fourth step's loss was 2.8e-5 apart, on an AVX2 host below 1e-5)."""
    state, losses = _train(strategy, strategy.put_state(_initial_state(strategy)), steps)
    evaluate = strategy.compile_eval(functools.partial(eval_step, axis_name=strategy.axis_name))
    final = strategy.host_value(evaluate(state, strategy.put_batch(_batches(1, seed=1)[0])))
    return losses, final, strategy.host_state(state)


def test_on_the_cpu_one_device_takes_the_batch_as_it_is_and_elsewhere_gets_it_placed(monkeypatch):
    batch = _batches(1)[0]
    assert SingleDevice().put_batch(batch) is batch  # the compiled step reads it in place: no copy
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    placed = SingleDevice().put_batch(batch)
    assert all(isinstance(placed[key], jax.Array) for key in batch)
    np.testing.assert_array_equal(placed["image"], batch["image"])


@pytest.fixture(scope="module")
def single():
    return _run(SingleDevice())


@pytest.mark.parametrize("name", ["data", "fsdp", "pmap"])
def test_same_losses_batch_stats_and_eval_as_one_device(single, name):
    losses, final, state = _run(create_strategy(name))
    np.testing.assert_allclose(losses, single[0], rtol=1e-5)
    assert losses[-1] < losses[0]
    for key in ("loss", "correct", "count"):
        np.testing.assert_allclose(final[key], single[1][key], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
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


def test_fsdp_shards_each_array_on_its_largest_divisible_axis():
    strategy = FullySharded()
    state = strategy.put_state(
        {
            "kernel": jnp.ones((3, 3, 16, 32)),
            "odd": jnp.ones((3, 5)),
            "bias": jnp.ones(8),
            "step": jnp.int32(0),
        }
    )
    assert state["kernel"].sharding.spec == PartitionSpec(None, None, None, "batch")
    assert state["kernel"].addressable_shards[0].data.shape == (3, 3, 16, 4)
    assert state["bias"].addressable_shards[0].data.shape == (1,)
    assert state["odd"].sharding.is_fully_replicated and state["step"].sharding.is_fully_replicated
    assert strategy.put_batch(_batches(1)[0])["image"].sharding.spec[0] == "batch"


def _arrays(state):
    return state.step, state.params, state.opt_state, state.batch_stats


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_fsdp_keeps_the_state_sharded_through_a_step_and_resumes_bit_identically(tmp_path):
    """2 steps, a sharded checkpoint, 2 more steps from it == 4 steps straight; the checkpoint restores
    replicated on one device and sharded over 4 devices, bit for bit."""
    strategy = FullySharded()
    straight, _ = _train(strategy, strategy.put_state(_initial_state(strategy)), 4)
    halfway, _ = _train(strategy, strategy.put_state(_initial_state(strategy)), 2)
    kernel = halfway.params["conv1"]["kernel"]  # (3, 3, 3, 16): out-features over the 8 devices
    assert kernel.addressable_shards[0].data.shape == (3, 3, 3, 2)
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(strategy.host_state(halfway), zero_metrics(), {"step": 2})
    checkpoints.close()

    template = strategy.put_state(_initial_state(strategy))
    restored = Checkpoints(tmp_path).restore_latest(strategy.host_state(template), zero_metrics())[0]
    resumed, _ = _train(strategy, strategy.put_state(restored), 2)
    _assert_same(strategy.host_value(_arrays(resumed)), strategy.host_value(_arrays(straight)))

    halfway_on_host = jax.device_get(_arrays(halfway))
    for other in (SingleDevice(), FullySharded(jax.devices()[:4])):
        template = other.put_state(_initial_state(other))
        restored = Checkpoints(tmp_path).restore_latest(other.host_state(template), zero_metrics())[0]
        _assert_same(jax.device_get(_arrays(restored)), halfway_on_host)
    assert restored.params["conv1"]["kernel"].addressable_shards[0].data.shape == (3, 3, 3, 4)


def test_pmap_stacks_one_copy_per_device():
    strategy = Pmap()
    state = strategy.put_state({"w": jnp.arange(3.0)})
    assert state["w"].shape == (8, 3)
    np.testing.assert_array_equal(strategy.host_state(state)["w"], np.arange(3.0))
    assert strategy.put_batch(_batches(1)[0])["image"].shape == (8, 2, 12, 12, 3)


@pytest.mark.parametrize("name", ["data", "fsdp", "pmap"])
def test_batch_not_divisible_by_devices_is_a_clear_error(name):
    with pytest.raises(ValueError, match="batch_size 12 must be divisible by the number of devices \\(8\\)"):
        create_strategy(name).check_batch_size(12)


def test_unknown_mode_lists_the_registered_ones():
    with pytest.raises(
        ValueError, match="unknown parallel strategy name 'model'; available: data, fsdp, none, pmap"
    ):
        create_strategy("model")
