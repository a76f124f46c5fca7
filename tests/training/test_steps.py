"""Loss, metrics, and the train/eval steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import models
from jaxcnn.training import create_train_state, cross_entropy_loss, eval_step, predict, train_step
from jaxcnn.training.steps import summarize


def test_cross_entropy_against_numpy():
    logits = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    labels = np.array([0, 3, 1, 2, 3])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_softmax[np.arange(5), labels]
    np.testing.assert_allclose(
        cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels)), expected, rtol=1e-5
    )
    smoothed = cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=0.2)
    targets = np.full((5, 4), 0.05)
    targets[np.arange(5), labels] += 0.8
    np.testing.assert_allclose(smoothed, -(targets * log_softmax).sum(-1), rtol=1e-5)


def _batch(n=16, seed=0, classes=10):
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.standard_normal((n, 28, 28, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, classes, n), jnp.int32),
        "mask": jnp.ones((n,), jnp.float32),
    }


@pytest.mark.parametrize("name", ["lenet5", "compact"])
def test_overfits_one_small_batch(name):
    state = create_train_state(models.create(name), optax.adam(3e-3), (28, 28, 1), seed=0)
    batch = _batch()
    step = jax.jit(train_step, donate_argnums=0)
    for _ in range(150):
        state, metrics = step(state, batch)
    assert float(metrics["loss"]) / float(metrics["count"]) < 0.05
    assert float(metrics["correct"]) == 16
    # In eval mode (running BatchNorm statistics) the memorised batch is still classified.
    evaluated = eval_step(state, batch)
    assert float(evaluated["correct"]) >= 15


def test_a_summary_of_no_example_has_no_loss_or_accuracy():
    sums = {"loss": jnp.zeros(()), "correct": jnp.zeros(()), "count": jnp.zeros(()), "skipped": jnp.ones(())}
    assert summarize(sums) == {"loss": None, "accuracy": None}  # not 0.0: every step was skipped
    sums.update(loss=jnp.asarray(3.0), correct=jnp.asarray(1.0), count=jnp.asarray(2.0))
    assert summarize(sums) == {"loss": 1.5, "accuracy": 0.5}


def test_metrics_are_sums_and_masked():
    state = create_train_state(models.create("lenet5"), optax.sgd(0.0), (28, 28, 1), seed=0)
    batch = _batch(8)
    full = eval_step(state, batch)
    masked = eval_step(state, {**batch, "mask": batch["mask"].at[4:].set(0.0)})
    half = eval_step(state, jax.tree.map(lambda a: a[:4], batch))
    assert float(full["count"]) == 8 and float(masked["count"]) == 4
    np.testing.assert_allclose(masked["loss"], half["loss"], rtol=1e-5)
    np.testing.assert_allclose(masked["correct"], half["correct"])


def test_flip_averages_the_logits_of_each_image_and_its_mirror_image():
    state = create_train_state(models.create("compact"), optax.sgd(0.0), (28, 28, 1), seed=0)
    batch = _batch(8)
    images = np.asarray(batch["image"])
    plain = np.asarray(predict(state, batch["image"]))
    mirrored = np.asarray(predict(state, jnp.asarray(images[:, :, ::-1].copy())))
    assert not np.allclose(plain, mirrored)  # the model is not flip-invariant, so the test can fail
    flipped = predict(state, batch["image"], flip=True)
    np.testing.assert_allclose(flipped, (plain + mirrored) / 2, rtol=1e-5, atol=1e-6)
    # A flip-symmetric image gives the plain logits; eval_step scores the averaged logits.
    symmetric = jnp.asarray(images + images[:, :, ::-1])
    np.testing.assert_allclose(
        predict(state, symmetric, flip=True), predict(state, symmetric), rtol=1e-5, atol=1e-6
    )
    metrics = eval_step(state, batch, flip=True)
    expected = cross_entropy_loss(flipped, batch["label"]).sum()
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    assert float(metrics["correct"]) == np.sum(np.argmax(flipped, -1) == np.asarray(batch["label"]))


def test_shift_averages_the_logits_of_the_image_moved_one_way_each():
    state = create_train_state(models.create("compact"), optax.sgd(0.0), (28, 28, 1), seed=0)
    batch = _batch(8)
    images = np.asarray(batch["image"])
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    # Moved down by r and right by c: the window at (2 - r, 2 - c) of the zero-padded image.
    moved = [padded[:, 2 - r : 30 - r, 2 - c : 30 - c] for r, c in [(0, 0), (-2, 0), (2, 0), (0, -2), (0, 2)]]
    views = [np.asarray(predict(state, jnp.asarray(view))) for view in moved]
    assert not np.allclose(views[0], views[1])  # the model is not shift-invariant, so the test can fail
    np.testing.assert_allclose(
        predict(state, batch["image"], shift=2), np.mean(views, axis=0), rtol=1e-5, atol=1e-6
    )
    mirrored = [np.asarray(predict(state, jnp.asarray(view[:, :, ::-1].copy()))) for view in moved]
    both = predict(state, batch["image"], flip=True, shift=2)
    np.testing.assert_allclose(both, np.mean(views + mirrored, axis=0), rtol=1e-5, atol=1e-6)
    metrics = eval_step(state, batch, flip=True, shift=2)
    assert float(metrics["correct"]) == np.sum(np.argmax(both, -1) == np.asarray(batch["label"]))


def test_train_step_updates_step_batch_stats_and_uses_dropout_rng():
    state = create_train_state(models.create("compact"), optax.sgd(0.1), (28, 28, 1), seed=0)
    new_state, _ = jax.jit(train_step)(state, _batch())
    assert int(new_state.step) == 1
    assert not np.allclose(
        new_state.batch_stats["BatchNorm_0"]["mean"], state.batch_stats["BatchNorm_0"]["mean"]
    )
    # Dropout draws from fold_in(rng, step): the same state gives the same step, another step differs.
    again, _ = jax.jit(train_step)(state, _batch())
    jax.tree.map(np.testing.assert_array_equal, new_state.params, again.params)


def test_pmean_of_gradients_under_pmap_equals_the_global_batch():
    devices = jax.local_devices()[:1]
    state = create_train_state(models.create("lenet5"), optax.sgd(0.1), (28, 28, 1), seed=0)
    batch = _batch(8)
    single, single_metrics = train_step(state, batch)
    stacked_state = jax.tree.map(lambda a: a[None], state)
    stacked_batch = jax.tree.map(lambda a: a[None], batch)
    step = jax.pmap(functools.partial(train_step, axis_name="batch"), axis_name="batch", devices=devices)
    mapped, mapped_metrics = step(stacked_state, stacked_batch)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a[0], b, rtol=1e-5, atol=1e-7), mapped.params, single.params
    )
    np.testing.assert_allclose(mapped_metrics["loss"][0], single_metrics["loss"], rtol=1e-5)
