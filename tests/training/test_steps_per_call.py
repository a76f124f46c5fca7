"""`config.steps_per_call`: k optimizer steps in one compiled call (`lax.scan` over a call's packed
batches) end exactly where k calls of one step do, for every feature that trains; the actions act between
calls; a run resumes from a call boundary bit-identically."""

import json
import logging
import os
import signal
import time

import jax
import numpy as np
import pytest

from jaxcnn import data
from jaxcnn.data.loader import call_steps, training_calls
from jaxcnn.data.pipeline import pack_batches, unpack_on_device
from jaxcnn.parallel import SingleDevice
from jaxcnn.training import TrainingInterrupted, build_run, default_config, read_metrics, train
from jaxcnn.training.config import steps_per_call, validate_config
from jaxcnn.training.metrics import MetricWriter


def tiny_config(**overrides):
    config = default_config()
    config.update_from_flattened_dict({
        "model": "simple_cnn", "dataset": "digits", "batch_size": 16, "num_steps": 8, "optimizer": "adam",
        "learning_rate": 2e-3, "log_every": 4, "checkpoint_every": 4, "test_examples": 64,
        **overrides,
    })  # fmt: skip
    return config


def trained(config, workdir):
    """`(state's leaves on the host, metrics.jsonl without timings)` of a run of `config` in `workdir`."""
    run = build_run(config, workdir, handle_signals=False)
    train(run)
    return jax.device_get(jax.tree.leaves(run.spec.strategy.host_state(run.state))), _logged(workdir)


def _logged(workdir):
    return [
        {k: v for k, v in row.items() if k != "examples_per_sec"}
        for row in read_metrics(workdir / "metrics.jsonl")
    ]


def assert_same_run(one_at_a_time, per_call):
    (leaves, rows), (call_leaves, call_rows) = one_at_a_time, per_call
    assert call_rows == rows
    assert len(leaves) == len(call_leaves)
    for leaf, call_leaf in zip(leaves, call_leaves, strict=True):  # params, optimizer and EMA state, RNG
        np.testing.assert_array_equal(_bits(leaf), _bits(call_leaf))


def _bits(leaf):
    return np.asarray(
        jax.random.key_data(leaf) if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key) else leaf
    )


FEATURES = {  # each run tiny: the features that share a run share it
    "accumulation_ema_augmented": {
        "optim.accumulate_steps": 2, "ema.decay": 0.9, "augment.flip": True, "augment.crop_padding": 1,
        "optim.skip_nonfinite_steps": 3,
    },
    # bfloat16 with augmentation and accumulation together differ in the last bits of 2 of the first
    # convolution's 288 weights (YNNPACK's dots, configure_cpu's XLA flag, inside the scan's loop), not here
    "bfloat16_ema_augmented": {
        "compute.dtype": "bfloat16", "ema.decay": 0.9, "augment.flip": True, "augment.crop_padding": 1,
        "optim.skip_nonfinite_steps": 3,
    },
    "dp_sgd": {"dp.clip_norm": 1.0, "dp.noise_multiplier": 0.5, "optimizer": "sgd", "learning_rate": 0.1},
    "ensemble": {"ensemble.size": 2},
    "data_parallel": {"parallel": "data"},  # over the 8 simulated CPU devices (tests/conftest.py)
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("feature", sorted(FEATURES))
def test_four_steps_a_call_end_as_four_calls_of_one(tmp_path, feature):
    one = trained(tiny_config(steps_per_call=1, **FEATURES[feature]), tmp_path / "one")
    four = trained(tiny_config(steps_per_call=4, **FEATURES[feature]), tmp_path / "four")
    assert [row["step"] for row in four[1]] == [4, 8, 8]  # logged between calls: train, train, test
    assert_same_run(one, four)


@pytest.mark.slow
def test_a_run_resumes_from_a_call_boundary_bit_identically(tmp_path, monkeypatch):
    """Stopped by a signal after the call that ends at step 4 (its checkpoint), resumed with another
    steps_per_call (its first call from 4 to the next multiple, 6), it ends as a run never stopped."""
    whole = trained(tiny_config(steps_per_call=1, num_steps=10), tmp_path / "whole")
    write = MetricWriter.write

    def write_then_interrupt(self, step, split, **values):
        write(self, step, split, **values)
        if step == 4:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MetricWriter, "write", write_then_interrupt)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 4"):
        train(build_run(tiny_config(steps_per_call=4, num_steps=10), tmp_path / "split"))
    monkeypatch.undo()
    resumed = trained(
        tiny_config(steps_per_call=3, num_steps=10, log_every=6, checkpoint_every=6), tmp_path / "split"
    )
    # log_every 4, then 6 (a multiple of 3): the train rows differ where the windows do, the state does not
    assert_same_run((whole[0], whole[1][-1:]), (resumed[0], resumed[1][-1:]))
    assert resumed[1][0] == whole[1][0]  # the first segment's row, as the whole run's
    assert [row["step"] for row in resumed[1]] == [4, 6, 10, 10]  # calls 4-6, 6-9, 9-10
    result = json.loads((tmp_path / "split" / "result.json").read_text())
    assert result["test_top5_accuracy"] == resumed[1][-1]["top5_accuracy"] > result["test_accuracy"]


def test_intervals_are_rounded_up_to_whole_calls_with_one_notice(tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        config = tiny_config(steps_per_call=4, log_every=5, num_steps=12, **{"profile.steps": 2})
        run = build_run(config, tmp_path, handle_signals=False)
    try:
        notices = [r.getMessage() for r in caplog.records if "config.steps_per_call 4" in r.getMessage()]
        assert notices == [
            "config.steps_per_call 4: log_every 5 -> 8, eval.every 89 -> 92, profile.start_step 10 -> 12 "
            "(logs, evaluations, checkpoints and the profile act between calls)"
        ]  # digits: 1,437 training examples, 89 batches of 16 an epoch
        assert [action.every for action in run.actions[:3]] == [8, 92, 4]
        assert run.spec.steps_per_call == 4
    finally:
        run.close()


def test_steps_per_call_by_backend_and_checked():
    assert steps_per_call(0, "cpu") == 1
    assert steps_per_call(0, "gpu") == steps_per_call(0, "tpu") == 8
    assert steps_per_call(3, "gpu") == 3
    with pytest.raises(ValueError, match="config.steps_per_call must be an int >= 0"):
        validate_config(tiny_config(steps_per_call=-1))


def test_calls_are_aligned_to_multiples_and_clipped_to_the_run():
    # a run of steps [6, 17) in calls of 4: the first call is cut at 8, the last at 17
    calls = [call_steps(call, 4, 6, 17) for call in range(6 // 4, -(-17 // 4))]
    assert calls == [range(6, 8), range(8, 12), range(12, 16), range(16, 17)]


def test_a_packed_call_unpacks_to_its_batches_bit_for_bit():
    rng = np.random.default_rng(0)
    batches = [
        {
            "image": rng.integers(0, 256, (3, 2, 2, 3), dtype=np.uint8),
            "label": np.array([0, 999, 70000], np.int32) + step,  # more than a byte
            "mask": np.array([1, 0, 1], np.float32),
        }
        for step in range(2)
    ]
    packed = pack_batches(batches)
    assert packed.shape == (3, 2, 2 * 2 * 3 + 4 + 1) and packed.dtype == np.uint8
    for step, batch in enumerate(batches):
        got = jax.jit(unpack_on_device, static_argnums=1)(packed[:, step], (2, 2, 3))
        for key, want in batch.items():
            assert got[key].dtype == want.dtype
            np.testing.assert_array_equal(got[key], want)
    with pytest.raises(TypeError, match="must be uint8"):
        pack_batches([{**batches[0], "image": batches[0]["image"].astype(np.float32)}])


def test_the_stream_of_calls_packs_the_batches_of_each_call():
    dataset = data.synthetic("train", image_shape=(4, 4, 1), num_examples=50)
    options = {"seed": 3, "steps_per_epoch": 6, "start_step": 5, "stop_step": 14}
    expected = list(data.training_batches(dataset, 8, **options))
    stream = training_calls(dataset, 8, steps_per_call=4, **options)
    calls = list(stream)
    stream.close()
    assert [call.shape[1] for call in calls] == [3, 4, 2]  # steps 5-7, 8-11, 12-13
    np.testing.assert_array_equal(np.concatenate(calls, axis=1), pack_batches(expected))
    with pytest.raises(ValueError, match="steps_per_call must be an int >= 1"):
        training_calls(dataset, 8, steps_per_call=0, **options)


@pytest.mark.slow
def test_calls_put_on_the_device_two_ahead_train_as_numpy_in_place(tmp_path, monkeypatch):
    """The GPU's and TPU's path, forced on the CPU: each call's batches, one array, are moved to the device
    by the prefetching thread, two calls ahead of the step; the run is the one that reads numpy in place."""
    in_place = trained(tiny_config(steps_per_call=4), tmp_path / "in_place")
    monkeypatch.setattr(SingleDevice, "put_batch", lambda self, batch: jax.device_put(batch))
    run = build_run(tiny_config(steps_per_call=4), tmp_path / "on_device", handle_signals=False)
    waited = time.monotonic()
    while run.batches._queue.qsize() < 2 and time.monotonic() - waited < 60:
        time.sleep(0.05)
    ahead = [call for call, _ in list(run.batches._queue.queue)]
    assert len(ahead) == 2 and all(
        isinstance(call, jax.Array) and call.shape == (16, 4, 8 * 8 + 4 + 1) for call in ahead
    )
    train(run)
    on_device = jax.device_get(jax.tree.leaves(run.state)), _logged(tmp_path / "on_device")
    assert_same_run(in_place, on_device)
