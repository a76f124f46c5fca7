"""Augmentation: each transform against its numpy definition, determinism, and pmap equivalence."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data.augment import (
    Augmentation,
    eval_views,
    random_crop,
    random_erasing,
    random_flip,
    translate,
)

IMAGES = np.random.default_rng(0).uniform(1, 2, (16, 7, 9, 2)).astype(np.float32)  # no zeros: erasing shows


def _keys(count, seed=0):
    return jax.random.split(jax.random.key(seed), count)


def test_crop_is_a_window_of_the_zero_padded_image():
    padded = np.pad(IMAGES[0], ((2, 2), (2, 2), (0, 0)))
    windows = {(dy, dx): padded[dy : dy + 7, dx : dx + 9] for dy in range(5) for dx in range(5)}
    offsets = set()
    for key in _keys(60):
        crop = np.asarray(random_crop(key, IMAGES[0], 2))
        found = [offset for offset, window in windows.items() if np.array_equal(window, crop)]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 15  # many of the 25 offsets occur
    np.testing.assert_array_equal(random_crop(_keys(1)[0], IMAGES[0], 0), IMAGES[0])


def test_flip_mirrors_half_the_time():
    flips = []
    for key in _keys(200):
        out = np.asarray(random_flip(key, IMAGES[0]))
        mirrored = np.array_equal(out, IMAGES[0][:, ::-1])
        assert mirrored or np.array_equal(out, IMAGES[0])
        flips.append(mirrored)
    assert 0.35 < np.mean(flips) < 0.65


def test_erasing_overwrites_one_rectangle():
    erased_count = 0
    for key in _keys(100):
        out = np.asarray(random_erasing(key, IMAGES[0], probability=0.5, value=0.0))
        changed = (out != IMAGES[0]).any(-1)
        if changed.any():
            erased_count += 1
            rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(changed.any(0))
            # The changed cells are exactly the bounding box, all channels set to the value.
            assert changed[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].all() and changed.sum() == len(
                rows
            ) * len(cols)
            assert (out[changed] == 0).all()
    assert 30 < erased_count < 70
    never = [random_erasing(key, IMAGES[0], probability=0.0) for key in _keys(20)]
    assert all(np.array_equal(x, IMAGES[0]) for x in never)


def test_batch_augmentation_is_deterministic_per_key_and_per_example():
    spec = Augmentation(crop_padding=2, flip=True, erase_probability=0.5)
    first = jax.jit(spec)(jax.random.key(3), IMAGES)
    np.testing.assert_array_equal(first, jax.jit(spec)(jax.random.key(3), IMAGES))
    assert not np.array_equal(first, spec(jax.random.key(4), IMAGES))
    # Example i uses key i of the split: equal to augmenting it alone with that key.
    keys = jax.random.split(jax.random.key(3), len(IMAGES))
    np.testing.assert_array_equal(first[5], spec.augment_one(keys[5], IMAGES[5]))


def test_disabled_augmentation_is_the_identity():
    spec = Augmentation()
    assert not spec.enabled and spec(jax.random.key(0), IMAGES) is IMAGES


def test_pmap_shards_equal_the_single_device_batch():
    devices = jax.local_device_count()
    assert devices == 8, "tests/conftest.py simulates 8 CPU devices"
    spec = Augmentation(crop_padding=1, flip=True, erase_probability=0.5)
    key = jax.random.key(7)
    sharded = jax.pmap(lambda x: spec(key, x, axis_name="batch"), axis_name="batch")(
        IMAGES.reshape(devices, -1, *IMAGES.shape[1:])
    )
    np.testing.assert_array_equal(np.asarray(sharded).reshape(IMAGES.shape), spec(key, IMAGES))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"crop_padding": -1}, ValueError, "crop_padding must be an int >= 0"),
        ({"crop_padding": 1.5}, TypeError, "crop_padding must be an int >= 0"),
        ({"flip": "yes"}, TypeError, "flip must be True or False"),
        (
            {"erase_probability": 1.5},
            ValueError,
            "erase_probability must be a finite number >= 0.0 and <= 1.0",
        ),
        ({"erase_probability": "half"}, TypeError, "erase_probability must be a finite number"),
    ],
)
def test_bad_settings_are_named(kwargs, error, message):
    with pytest.raises(error, match=message):
        Augmentation(**kwargs)


def test_images_must_be_a_batch():
    with pytest.raises(ValueError, match="images must be"):
        Augmentation(flip=True)(jax.random.key(0), jnp.zeros((7, 9, 2)))


@pytest.mark.parametrize("rows, cols", [(0, 0), (1, 0), (-2, 0), (0, 3), (-1, -4), (6, 8)])
def test_translate_moves_the_pixels_and_fills_zeros(rows, cols):
    moved = np.asarray(translate(jnp.asarray(IMAGES), rows, cols))
    expected = np.zeros_like(IMAGES)
    for y in range(7):
        for x in range(9):
            if 0 <= y - rows < 7 and 0 <= x - cols < 9:
                expected[:, y, x] = IMAGES[:, y - rows, x - cols]
    np.testing.assert_array_equal(moved, expected)


def test_translate_is_the_crop_at_that_offset():
    padded = np.pad(IMAGES[0], ((2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(translate(jnp.asarray(IMAGES), 1, -2)[0], padded[1:8, 4:13])


def test_eval_views_are_the_image_its_moves_and_mirrors():
    images = jnp.asarray(IMAGES)
    (plain,) = eval_views(images)
    np.testing.assert_array_equal(plain, IMAGES)
    views = eval_views(images, flip=True, shift=1)
    moved = [translate(images, r, c) for r, c in [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]]
    assert len(views) == 10
    for view, expected in zip(views, moved + [m[:, :, ::-1] for m in moved], strict=True):
        np.testing.assert_array_equal(view, expected)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: translate(jnp.asarray(IMAGES), 7, 0),
            r"shift \(7, 0\) must be smaller than the images' 7x9",
        ),
        (lambda: translate(jnp.asarray(IMAGES), 0, -9), "must be smaller"),
        (lambda: eval_views(jnp.asarray(IMAGES), shift=-1), "shift must be an int >= 0"),
        (lambda: eval_views(jnp.asarray(IMAGES[0]), shift=1), "images must be"),
        (lambda: eval_views(jnp.asarray(IMAGES[0])), "images must be"),
        (lambda: translate(jnp.asarray(IMAGES[0]), 1, 0), "images must be"),
    ],
)
def test_bad_eval_views_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_shift_that_is_no_int_is_a_type_error():
    with pytest.raises(TypeError, match="shift must be an int >= 0, got 1.0"):
        eval_views(jnp.asarray(IMAGES), shift=1.0)


@pytest.mark.parametrize("rows, cols, name", [(1.0, 0, "rows"), (0, True, "cols")])
def test_translate_offsets_must_be_ints(rows, cols, name):
    with pytest.raises(TypeError, match=f"{name} must be an int"):
        translate(jnp.asarray(IMAGES), rows, cols)
