"""Checkpoints: round trip, keep-last-N, and fallback past a corrupted newest one."""

import logging
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.training import CheckpointError, Checkpoints, create_train_state, train_step
from jaxcnn.training.steps import zero_metrics


def _state():
    return create_train_state(
        models.create("compact", features=(4, 8)), optax.sgd(0.1, momentum=0.9), (8, 8, 1), 0
    )


def _advance(state, steps=1):
    rng = np.random.default_rng(int(state.step))
    batch = {
        "image": jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32),
        "label": jnp.asarray([0, 1, 2, 3]),
        "mask": jnp.ones(4),
    }
    for _ in range(steps):
        state, _ = train_step(state, batch)
    return state


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_round_trip_restores_every_field(tmp_path):
    state = _advance(_state(), 2)
    metrics = {k: v + 3 for k, v in zero_metrics().items()}
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save(state, metrics, {"step": 2, "epoch": 0, "batch": 2})
    checkpoints.close()
    restored, restored_metrics, position = Checkpoints(tmp_path / "ckpt").restore_latest(
        _state(), zero_metrics()
    )
    for field in ("step", "params", "opt_state", "batch_stats", "rng"):
        _assert_same(getattr(restored, field), getattr(state, field))
    _assert_same(restored_metrics, metrics)
    assert position == {"step": 2, "epoch": 0, "batch": 2}


def test_empty_directory_restores_nothing(tmp_path):
    assert Checkpoints(tmp_path / "none").restore_latest(_state(), zero_metrics()) is None


def test_keeps_the_last_n(tmp_path):
    checkpoints = Checkpoints(tmp_path, max_to_keep=2)
    state = _state()
    for _ in range(4):
        state = _advance(state)
        checkpoints.save(state, zero_metrics(), {})
    checkpoints.close()
    assert Checkpoints(tmp_path).steps() == [3, 4]


def _corrupt(step_dir):
    for path in step_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")


def test_corrupted_newest_falls_back_with_a_warning(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path)
    first = _advance(_state())
    checkpoints.save(first, zero_metrics(), {})
    checkpoints.save(_advance(first), zero_metrics(), {})
    checkpoints.close()
    _corrupt(tmp_path / "2")
    with caplog.at_level(logging.WARNING):
        restored, _, _ = Checkpoints(tmp_path).restore_latest(_state(), zero_metrics())
    assert int(restored.step) == 1
    _assert_same(restored.params, first.params)
    assert "Skipping unreadable checkpoint" in caplog.text and str(tmp_path / "2") in caplog.text


def test_all_corrupted_names_the_directory(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(_advance(_state()), zero_metrics(), {})
    checkpoints.close()
    _corrupt(tmp_path / "1")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        Checkpoints(tmp_path).restore_latest(_state(), zero_metrics())


def test_an_unfinished_save_is_ignored(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(_advance(_state()), zero_metrics(), {})
    checkpoints.close()
    # What a process killed mid-save leaves: a temporary directory that was never renamed.
    shutil.copytree(tmp_path / "1", tmp_path / "2.orbax-checkpoint-tmp-1234")
    assert Checkpoints(tmp_path).steps() == [1]
