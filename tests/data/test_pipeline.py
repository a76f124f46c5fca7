"""Batches: deterministic order, resumption, splitting over processes, padding; prefetch."""

import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import data


@pytest.fixture(scope="module")
def dataset():
    return data.synthetic("train", image_shape=(4, 4, 2), num_examples=103)


def _labels(batch_iter):
    return [batch["label"].tolist() for batch in batch_iter]


def test_normalize_against_hand_computed_values():
    images = np.array([[[[0, 255]], [[51, 204]]]], np.uint8)  # (1, 2, 1, 2)
    got = data.normalize(images, mean=(0.2, 0.5), std=(0.5, 0.25))
    expected = [[[[-0.4, 2.0]], [[0.0, 1.2]]]]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert got.dtype == np.float32


def test_one_epoch_visits_every_example_once(dataset):
    seen = np.concatenate(
        [b["image"].reshape(len(b["image"]), -1) for b in data.batches(dataset, 10, seed=3)]
    )
    assert len(seen) == 100 == 10 * data.num_batches(103, 10)
    expected = data.normalize(dataset.images, dataset.mean, dataset.std).reshape(103, -1)
    # 100 distinct examples of the dataset, none twice.
    matches = [np.flatnonzero((expected == row).all(1)) for row in seen]
    assert all(len(m) >= 1 for m in matches) and len({int(m[0]) for m in matches}) == 100


def test_order_is_a_function_of_seed_and_epoch(dataset):
    first = _labels(data.batches(dataset, 10, seed=1, epoch=0))
    assert first == _labels(data.batches(dataset, 10, seed=1, epoch=0))
    assert first != _labels(data.batches(dataset, 10, seed=1, epoch=1))
    assert first != _labels(data.batches(dataset, 10, seed=2, epoch=0))
    np.testing.assert_array_equal(data.epoch_order(103, 1, 0), np.random.default_rng([1, 0]).permutation(103))


def test_resuming_at_a_batch_gives_the_remaining_batches(dataset):
    whole = _labels(data.batches(dataset, 10, seed=5, epoch=2))
    assert _labels(data.batches(dataset, 10, seed=5, epoch=2, start_batch=4)) == whole[4:]


def test_processes_share_each_global_batch(dataset):
    whole = list(data.batches(dataset, 12, seed=0))
    shares = [list(data.batches(dataset, 12, seed=0, process_index=p, process_count=3)) for p in range(3)]
    for b, batch in enumerate(whole):
        for key in ("image", "label", "mask"):
            np.testing.assert_array_equal(np.concatenate([share[b][key] for share in shares]), batch[key])
    assert shares[0][0]["label"].shape == (4,)


def test_last_batch_is_padded_and_masked(dataset):
    batches = list(data.batches(dataset, 10, shuffle=False, drop_remainder=False))
    assert len(batches) == 11 == data.num_batches(103, 10, drop_remainder=False)
    last = batches[-1]
    assert last["image"].shape == (10, 4, 4, 2) and last["mask"].tolist() == [1] * 3 + [0] * 7
    assert not last["image"][3:].any() and last["label"][:3].tolist() == dataset.labels[100:].tolist()
    assert sum(b["mask"].sum() for b in batches) == 103


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be an int >= 1"),
        ({"batch_size": 10, "process_count": 3}, "divisible by process_count"),
        (
            {"batch_size": 10, "process_index": 2, "process_count": 2},
            "process_index must be an int >= 0 and <= 1, got 2",
        ),
        ({"batch_size": 10, "start_batch": -1}, "start_batch must be an int >= 0"),
    ],
)
def test_bad_arguments_are_named(dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        next(data.batches(dataset, **kwargs))


def test_prefetch_transforms_in_order_and_ends():
    with data.prefetch(iter(range(20)), size=3, transform=lambda x: x * x) as items:
        assert list(items) == [x * x for x in range(20)]
        with pytest.raises(StopIteration):
            next(items)


def test_prefetch_raises_the_producers_error():
    def broken():
        yield 1
        raise OSError("disk gone")

    items = data.prefetch(broken())
    assert next(items) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(items)


def test_prefetch_close_stops_an_endless_producer():
    produced = []

    def endless():
        while True:
            produced.append(1)
            yield len(produced)

    items = data.prefetch(endless(), size=2)
    assert next(items) == 1
    items.close()
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 4
    assert not items._thread.is_alive()


@pytest.mark.skipif(sys.platform != "linux", reason="a thread has its own scheduling priority on Linux only")
def test_prefetch_produces_at_a_lower_priority_than_the_step():
    def priority():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    before = priority()
    with data.prefetch(iter(range(3)), transform=lambda _: priority()) as producer_priorities:
        expected = min(before + data.pipeline.BACKGROUND_NICENESS, 19)
        assert list(producer_priorities) == [expected] * 3
    assert priority() == before  # the consumer's (the step's) thread keeps its priority


def test_prefetch_rejects_a_bad_size():
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        data.prefetch(iter([]), size=0)


@pytest.mark.parametrize(
    "mean, std", [((0.2860,), (0.3530,)), ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))]
)
def test_normalize_on_device_is_normalize_bit_for_bit(mean, std):
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, len(mean)), dtype=np.uint8)
    images[0] = np.arange(256).reshape(16, 16, 1)  # every value, in every channel
    got = jax.jit(lambda x: data.normalize_on_device(x, mean, std))(images)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), data.normalize(images, mean, std))


def test_unnormalized_batches_keep_the_images_as_stored(dataset):
    raw = list(data.batches(dataset, 10, seed=4, shuffle=False, drop_remainder=False, normalized=False))
    normalized = list(data.batches(dataset, 10, seed=4, shuffle=False, drop_remainder=False))
    assert raw[0]["image"].dtype == np.uint8 and len(raw) == 11
    np.testing.assert_array_equal(raw[0]["image"], dataset.images[:10])
    for r, n in zip(raw, normalized, strict=True):
        np.testing.assert_array_equal(r["mask"], n["mask"])
        np.testing.assert_array_equal(r["label"], n["label"])
    np.testing.assert_array_equal(raw[-1]["image"][3:], 0)  # the padding of the last batch


def test_normalize_on_device_names_bad_images_and_statistics():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(TypeError, match="images must be uint8.*float32"):
        data.normalize_on_device(images.astype(np.float32), (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(ValueError, match=r"one value per channel of images \(3\), got 1 and 1"):
        data.normalize_on_device(images, (0.5,), (0.2,))
    with pytest.raises(ValueError, match="got 3 and 2"):
        data.normalize_on_device(images, (0.5,) * 3, (0.2,) * 2)
