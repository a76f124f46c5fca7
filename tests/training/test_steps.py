"""Loss, metrics, and the train/eval steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxcnn import data, models
from jaxcnn.training import create_train_state, cross_entropy_loss, eval_step, predict, train_step
from jaxcnn.training.steps import accumulating, augmenting, averaging_weights, summarize, zero_metrics


def _state(name, tx, api="linen", seed=0):
    """A train state of a zoo model in either API; NNX trains natively, Linen through `models.create`."""
    if api == "nnx":
        return create_train_state(models.create_nnx(name, rngs=nnx.Rngs(seed)), tx, seed=seed)
    return create_train_state(models.create(name), tx, (28, 28, 1), seed=seed)


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


@pytest.mark.parametrize("name, api", [("lenet5", "nnx"), ("compact", "nnx"), ("compact", "linen")])
def test_overfits_one_small_batch(name, api):
    state = _state(name, optax.adam(3e-3), api)
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


@pytest.mark.parametrize("api", ["nnx", "linen"])
def test_train_step_updates_step_batch_stats_and_uses_dropout_rng(api):
    state = _state("compact", optax.sgd(0.1), api)
    new_state, _ = jax.jit(train_step)(state, _batch())
    assert int(new_state.step) == 1
    assert not np.allclose(new_state.batch_stats["bn1"]["mean"], state.batch_stats["bn1"]["mean"])
    # Dropout draws from fold_in(rng, step): the same state gives the same step, to the last bit on a CPU.
    # A GPU's reductions may add in another order from call to call (1e-9 apart on an H200): another
    # dropout mask would move the parameters by far more than the tolerance.
    again, _ = jax.jit(train_step)(state, _batch())
    exact = jax.default_backend() == "cpu"
    same = (
        np.testing.assert_array_equal if exact else functools.partial(np.testing.assert_allclose, rtol=1e-5)
    )
    jax.tree.map(same, new_state.params, again.params)
    other, _ = jax.jit(train_step)(state.replace(step=state.step + 1), _batch())
    leaves = zip(jax.tree.leaves(new_state.params), jax.tree.leaves(other.params), strict=True)
    assert not all(np.allclose(a, b, rtol=1e-5) for a, b in leaves)


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


def test_an_nnx_model_trains_exactly_as_its_linen_form():
    """The same weights through the native NNX step and through the Linen module: the same updates and
    the same BatchNorm statistics. (Dropout off: Linen derives each module's key from the step's key and
    its path, NNX from the step's key and the layer's index, so the masks differ, though both depend on
    the step alone.)"""
    tx = optax.sgd(0.1, momentum=0.9)
    nnx_state = create_train_state(models.create_nnx("compact", dropout=0.0, rngs=nnx.Rngs(3)), tx, seed=3)
    linen_state = create_train_state(models.create("compact", dropout=0.0), tx, (28, 28, 1), seed=3)
    linen_state = linen_state.replace(params=nnx_state.params, batch_stats=nnx_state.batch_stats)
    linen_state = linen_state.replace(opt_state=linen_state.tx.init(linen_state.params))
    step = jax.jit(train_step)
    for seed in range(2):
        nnx_state, nnx_metrics = step(nnx_state, _batch(seed=seed))
        linen_state, linen_metrics = step(linen_state, _batch(seed=seed))
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6)
    jax.tree.map(close, nnx_state.params, linen_state.params)
    jax.tree.map(close, nnx_state.batch_stats, linen_state.batch_stats)
    jax.tree.map(close, nnx_metrics, linen_metrics)


def _counting_step(state, batch):
    """A stand-in step: counts, and reports the batch's image sum as its loss."""
    metrics = {"loss": jnp.sum(batch["image"]), "correct": jnp.zeros(()), "count": jnp.ones(())}
    return state.replace(step=state.step + 1), metrics


def test_augmenting_draws_from_the_step_and_leaves_disabled_augmentation_out():
    state = _state("lenet5", optax.sgd(0.0))
    key = jax.random.key(7)
    plain = augmenting(_counting_step, data.Augmentation(), key)
    assert plain is _counting_step  # nothing to do: not even a wrapper
    augmented = augmenting(_counting_step, data.Augmentation(crop_padding=2, flip=True), key)
    batch = _batch(4)
    _, first = augmented(state, batch)
    _, again = augmented(state, batch)
    _, later = augmented(state.replace(step=state.step + 1), batch)
    expected = data.Augmentation(crop_padding=2, flip=True)(jax.random.fold_in(key, 0), batch["image"])
    assert float(first["loss"]) == float(again["loss"]) == pytest.approx(float(jnp.sum(expected)))
    assert float(later["loss"]) != float(first["loss"])


def test_averaging_weights_moves_the_average_after_the_step():
    state = _state("lenet5", optax.sgd(0.0)).with_ema()
    state = state.replace(params=jax.tree.map(lambda p: p + 1.0, state.params))
    averaged, _ = averaging_weights(_counting_step, 0.5)(state, _batch(2))
    expected = state.replace(step=state.step + 1).update_ema(0.5)
    jax.tree.map(np.testing.assert_array_equal, averaged.ema_params, expected.ema_params)
    assert averaging_weights(_counting_step, 0.0) is _counting_step


def test_accumulating_adds_metrics_and_counts_non_finite_steps_apart():
    state = _state("lenet5", optax.sgd(0.0))
    step = accumulating(_counting_step, skip_nonfinite=True)
    sums = zero_metrics(skipped=True)
    state, sums = step(state, sums, _batch(2))
    state, sums = step(state, sums, {**_batch(2), "image": jnp.full((2, 28, 28, 1), jnp.nan)})
    assert float(sums["count"]) == 1 and float(sums["skipped"]) == 1
    assert float(sums["loss"]) == pytest.approx(float(jnp.sum(_batch(2)["image"])))


class _FixedLogits:
    """A state whose model answers `logits` whatever the images: eval_step's metrics by hand."""

    def __init__(self, logits):
        self.apply_fn = lambda variables, images, train: jnp.asarray(logits)

    def variables(self):
        return {}


def test_top5_accuracy_counts_labels_among_the_five_largest_logits_by_hand():
    logits = np.array([
        [7.0, 6, 5, 4, 3, 2, 1],  # label 0: first, so in the top 1 and 5
        [7.0, 6, 5, 4, 3, 2, 1],  # label 4: fifth, in the top 5 only
        [7.0, 6, 5, 4, 3, 2, 1],  # label 5: sixth, in neither
        [1.0, 2, 3, 4, 5, 6, 7],  # label 6: first, but padding (mask 0)
        [3.0, 3, 3, 3, 3, 3, 0],  # label 5: tied with 0-4, which come first, so sixth
    ])  # fmt: skip
    batch = {
        "image": jnp.zeros((5, 2, 2, 1)),
        "label": jnp.array([0, 4, 5, 6, 5]),
        "mask": jnp.array([1.0, 1, 1, 0, 1]),
    }
    sums = eval_step(_FixedLogits(logits), batch)
    assert float(sums["correct"]) == 1 and float(sums["top5_correct"]) == 2 and float(sums["count"]) == 4
    assert summarize(sums) == {
        "loss": pytest.approx(float(sums["loss"]) / 4),
        "accuracy": 0.25,
        "top5_accuracy": 0.5,
    }
    five_classes = eval_step(_FixedLogits(logits[:, :5]), {**batch, "label": jnp.array([0, 4, 1, 2, 3])})
    assert "top5_correct" not in five_classes  # every label is in the top 5 of 5
