"""Mixup and CutMix: the mixes by hand, their draws, the mixed loss by hand, and a short run."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn import data, models
from jaxcnn.training import create_train_state, default_config, predict, train_and_evaluate, train_step
from jaxcnn.training.steps import augmenting


def images(n=4, shape=(5, 6, 2), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def test_mixup_and_cutmix_by_hand():
    x = images()
    np.testing.assert_allclose(data.mixup(jnp.asarray(x), 0.3), 0.3 * x + 0.7 * x[::-1], rtol=1e-6)
    expected = x.copy()
    expected[:, 1:3, 2:5] = x[::-1, 1:3, 2:5]
    np.testing.assert_array_equal(data.cutmix(jnp.asarray(x), 1, 2, 2, 3), expected)


@pytest.mark.parametrize("mixup_alpha, cutmix_alpha", [(0.4, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_mix_batch_weight_matches_the_mix(mixup_alpha, cutmix_alpha):
    x = images(n=6, shape=(8, 8, 1))
    kinds = set()
    for seed in range(10):
        mixed, weight = data.mix_batch(jax.random.key(seed), jnp.asarray(x), mixup_alpha, cutmix_alpha)
        mixed, weight = np.asarray(mixed), float(weight)
        assert 0.0 <= weight <= 1.0
        as_mixup = np.allclose(mixed, weight * x + (1 - weight) * x[::-1], atol=1e-6)
        # CutMix: each pixel is the example's or its partner's, the example's in the fraction `weight`.
        own = mixed == x
        as_cutmix = bool(np.all(own | (mixed == x[::-1]))) and own[0].mean() == pytest.approx(weight)
        assert as_mixup or as_cutmix
        kinds.add("either" if as_mixup and as_cutmix else "mixup" if as_mixup else "cutmix")
    expected = {"mixup"} if not cutmix_alpha else {"cutmix"} if not mixup_alpha else {"mixup", "cutmix"}
    assert kinds - {"either"} == expected
    again = data.mix_batch(jax.random.key(seed), jnp.asarray(x), mixup_alpha, cutmix_alpha)
    np.testing.assert_array_equal(again[0], mixed)  # a function of the key


def test_the_mixed_loss_weighs_both_labels_by_hand():
    state = create_train_state(models.create("lenet5"), optax.sgd(0.0), (28, 28, 1), seed=0)
    x = jnp.asarray(images(n=4, shape=(28, 28, 1)))
    labels = jnp.asarray([1, 7, 3, 3], jnp.int32)
    batch = {"image": x, "label": labels, "mask": jnp.ones(4), "mix_label": labels[::-1], "mix_weight": 0.25}
    _, metrics = train_step(state, batch)
    logits = np.asarray(predict(state, x), np.float64)  # lenet5: no dropout or batch statistics
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    rows = np.arange(4)
    expected = -(0.25 * log_softmax[rows, labels] + 0.75 * log_softmax[rows, labels[::-1]]).sum()
    assert float(metrics["loss"]) == pytest.approx(expected, rel=1e-5)


def test_augmenting_mixes_from_the_step_key():
    spec = data.Augmentation(mixup_alpha=0.5)
    seen = []
    step = augmenting(lambda state, batch: seen.append(batch) or (state, {}), spec, jax.random.key(3))
    state = create_train_state(models.create("lenet5"), optax.sgd(0.0), (28, 28, 1), seed=0)
    batch = {
        "image": jnp.asarray(images(n=4, shape=(28, 28, 1))),
        "label": jnp.arange(4),
        "mask": jnp.ones(4),
    }
    step(state, batch)
    mixed, weight = data.mix_batch(
        jax.random.fold_in(jax.random.fold_in(jax.random.key(3), 0), 1), batch["image"], 0.5, 0.0
    )
    np.testing.assert_array_equal(seen[0]["image"], mixed)
    np.testing.assert_array_equal(seen[0]["mix_label"], [3, 2, 1, 0])
    assert float(seen[0]["mix_weight"]) == float(weight)


def test_mixing_trains_and_is_refused_where_it_cannot_apply(tmp_path):
    config = default_config()
    config.update_from_flattened_dict(
        {"model": "simple_cnn", "dataset": "digits", "batch_size": 32, "num_steps": 4, "log_every": 2,
         "augment.mixup_alpha": 0.2, "augment.cutmix_alpha": 1.0}
    )  # fmt: skip
    result = train_and_evaluate(config, tmp_path / "run")
    assert result.steps == 4 and np.isfinite(result.train_loss)
    config.parallel = "pmap"
    with pytest.raises(ValueError, match="config.augment.mixup_alpha / cutmix_alpha"):
        train_and_evaluate(config, tmp_path / "pmap")
