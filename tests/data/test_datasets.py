"""`load`: every dataset and source, the order of sources offline, and the errors users see."""

import dataclasses
import logging
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from datafiles import cifar10_splits, random_cifar, write_cifar10_archive, write_mnist_split

from jaxcnn import data, training
from jaxcnn.data import datasets as datasets_lib

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def tiny_split(split, count=None, seed=0):
    rng = np.random.default_rng([seed, split == "test"])
    count = count or (12 if split == "train" else 5)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count).astype(np.uint8)


@pytest.fixture
def offline(monkeypatch):
    """No network and no Debian package: only what a test provides."""
    monkeypatch.setattr(datasets_lib, "_reachable", lambda host, **kwargs: False)
    infos = {
        name: dataclasses.replace(info, system_dirs=()) for name, info in datasets_lib._TFDS_DATASETS.items()
    }
    monkeypatch.setattr(datasets_lib, "_TFDS_DATASETS", infos)
    for name in infos:
        monkeypatch.delenv(f"JAXCNN_{name.upper()}_DIR", raising=False)


def prepare_tiny_tfds(data_dir, splits):
    """A real TFDS `fashion_mnist` (array_record files) prepared from arrays, as TFDS would from a download.

    The images go in as PIL images: TFDS encodes numpy images with TensorFlow, which is not installed.
    """
    import tensorflow_datasets as tfds
    from PIL import Image
    from tensorflow_datasets.image_classification.mnist import FashionMNIST

    class TinyFashionMNIST(FashionMNIST, skip_registration=True):
        name = "fashion_mnist"

        def _split_generators(self, dl_manager):
            return [tfds.core.SplitGenerator(name=split, gen_kwargs={"split": split}) for split in splits]

        def _generate_examples(self, split):
            images, labels = splits[split]
            for index, (image, label) in enumerate(zip(images, labels, strict=True)):
                yield index, {"image": Image.fromarray(image), "label": int(label)}

    TinyFashionMNIST(data_dir=str(data_dir)).download_and_prepare(file_format="array_record")


def test_available_names():
    names = ["cifar10", "digits", "fashion_mnist", "folder", "imagenet", "mnist", "synthetic"]
    assert data.available() == names


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"name": "svhn"}, ValueError, "unknown dataset name 'svhn'; available: cifar10, digits"),
        ({"split": "validation"}, ValueError, "split must be one of 'train', 'test'"),
        ({"num_examples": -1}, ValueError, "num_examples must be an int >= 0"),
        ({"num_examples": 2.5}, TypeError, "num_examples must be an int >= 0"),
        ({"source": "internet"}, ValueError, "source must be one of 'auto', 'tfds', 'files'"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, message):
    kwargs = {"name": "digits", **kwargs}
    with pytest.raises(error, match=message):
        data.load(kwargs.pop("name"), **kwargs)


def test_a_registered_dataset_loads_by_name_and_in_a_config(tmp_path):
    """A user's dataset: `data.register`, then `load` and `config.dataset` accept its name."""

    @data.register("test_squares")
    def squares(split, *, data_dir=None, source="auto"):
        count = 40 if split == "train" else 10
        images = np.zeros((count, 6, 6, 1), np.uint8)
        labels = np.arange(count, dtype=np.int32) % 2
        images[labels == 1, 1:5, 1:5] = 255  # class 1: a bright square
        return data.ArrayDataset("test_squares", split, images, labels, ("empty", "square"), (0.2,), (0.4,))

    assert "test_squares" in data.available()
    assert (
        len(data.load("test_squares", "test")) == 10 and len(data.load("test_squares", num_examples=8)) == 8
    )
    with pytest.raises(ValueError, match="already registered"):
        data.register("test_squares", lambda split, **kwargs: None)
    config = training.default_config()
    config.model, config.dataset, config.batch_size = "simple_cnn", "test_squares", 8
    config.optimizer, config.learning_rate, config.num_steps = "adam", 1e-2, 15
    result = training.train_and_evaluate(config, tmp_path, handle_signals=False)
    assert result.dataset == "test_squares" and result.test_accuracy == 1.0


def test_digits_split_and_statistics():
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (
        (len(train), len(test)) == (1437, 360) and train.image_shape == (8, 8, 1) and train.num_classes == 10
    )
    assert train.images.dtype == np.uint8 and train.images.max() == 255 and train.labels.dtype == np.int32
    assert set(np.unique(test.labels)) == set(range(10))
    # The statistics are the training split's, and the test split uses the same ones.
    assert train.mean[0] == pytest.approx(train.images.mean() / 255) and test.mean == train.mean
    assert train.std[0] == pytest.approx((train.images / 255).std())
    assert len(data.load("digits", num_examples=100)) == 100
    np.testing.assert_array_equal(data.load("digits", num_examples=100).labels, train.labels[:100])


def test_digits_are_scikit_learns_read_without_importing_it():
    """The file read directly (importing scikit-learn took seconds of every run) holds `load_digits`'s data:
    the same images, scaled 0..16 -> 0..255, and labels, in the one fixed shuffle of both splits."""
    code = "import sys; from jaxcnn import data; data.load('digits'); print('sklearn' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "False", imported.stderr[-2000:]
    from sklearn.datasets import load_digits

    reference = load_digits()
    train, test = data.load("digits", "train"), data.load("digits", "test")
    images = np.concatenate([train.images, test.images])[..., 0]
    labels = np.concatenate([train.labels, test.labels])
    order = np.random.default_rng(0).permutation(len(reference.target))
    np.testing.assert_array_equal(images, np.round(reference.images[order] * 255 / 16))
    np.testing.assert_array_equal(labels, reference.target[order])


def test_synthetic_is_deterministic_and_learnable():
    train, test = data.load("synthetic", "train"), data.load("synthetic", "test")
    np.testing.assert_array_equal(train.images, data.load("synthetic", "train").images)
    assert (len(train), len(test), train.image_shape) == (10_000, 2_000, (28, 28, 1))
    # A nearest-class-mean classifier fit on train separates test: the classes carry signal.
    means = np.stack([train.images[train.labels == k].mean(0) for k in range(10)]).reshape(10, -1)
    distances = ((test.images.reshape(len(test), 1, -1) / 1.0 - means[None]) ** 2).sum(-1)
    assert (distances.argmin(1) == test.labels).mean() > 0.95
    other = data.synthetic("test", image_shape=(16, 16, 3), num_classes=4, num_examples=7)
    assert other.images.shape == (7, 16, 16, 3) and other.num_classes == 4 and len(other.mean) == 3
    with pytest.raises(ValueError, match="image_shape"):
        data.synthetic(image_shape=(16, 16))


def test_idx_source_from_environment_variable(tmp_path, monkeypatch, offline):
    images, labels = tiny_split("train")
    write_mnist_split(tmp_path, "train", images, labels)
    monkeypatch.setenv("JAXCNN_FASHION_MNIST_DIR", str(tmp_path))
    for source in ("files", "auto"):
        loaded = data.load("fashion_mnist", "train", source=source)
        np.testing.assert_array_equal(loaded.images[..., 0], images)
        np.testing.assert_array_equal(loaded.labels, labels)
        assert loaded.class_names[9] == "Ankle boot" and str(tmp_path) in loaded.source


def test_idx_source_in_data_dir_for_mnist(tmp_path, offline, caplog):
    (tmp_path / "mnist").mkdir()
    images, labels = tiny_split("test")
    write_mnist_split(tmp_path / "mnist", "test", images, labels, compress=False)
    with caplog.at_level(logging.WARNING):
        loaded = data.load("mnist", "test", data_dir=tmp_path, num_examples=3)
    np.testing.assert_array_equal(loaded.images[..., 0], images[:3])
    assert loaded.mean == (0.1307,)
    assert "Variant folder" not in caplog.text  # TFDS's notice that no prepared copy exists: the usual case


def test_nothing_available_names_every_remedy(tmp_path, offline):
    with pytest.raises(data.DataUnavailableError) as error:
        data.load("fashion_mnist", "train", data_dir=tmp_path)
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message and "JAXCNN_FASHION_MNIST_DIR" in message
    assert "cannot be reached" in message and "dataset=digits" in message and str(tmp_path) in message


def test_labels_out_of_range_are_refused(tmp_path, monkeypatch, offline):
    images, labels = tiny_split("train")
    write_mnist_split(tmp_path, "train", images, labels + 10)
    monkeypatch.setenv("JAXCNN_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(data.DataUnavailableError, match="labels outside"):
        data.load("fashion_mnist", "train")


def _pairs(images, labels):
    return sorted((image.tobytes(), int(label)) for image, label in zip(images, labels, strict=True))


def test_tfds_prepared_dataset_is_read_without_tensorflow(tmp_path, monkeypatch, offline):
    splits = {"train": tiny_split("train"), "test": tiny_split("test")}
    prepare_tiny_tfds(tmp_path, splits)
    # IDX files with other content exist too: a prepared TFDS copy comes first in "auto".
    (tmp_path / "idx").mkdir()
    write_mnist_split(tmp_path / "idx", "train", *tiny_split("train", seed=1))
    monkeypatch.setenv("JAXCNN_FASHION_MNIST_DIR", str(tmp_path / "idx"))
    for split, (images, labels) in splits.items():
        for source in ("tfds", "auto"):
            loaded = data.load("fashion_mnist", split, data_dir=tmp_path, source=source)
            assert loaded.source == "tfds" and loaded.images.shape == (len(images), 28, 28, 1)
            # TFDS stores examples in an order of its own (hashed keys): compare as sets of pairs.
            assert _pairs(np.asarray(loaded.images)[..., 0], loaded.labels) == _pairs(images, labels)
    # source="files" skips TFDS.
    np.testing.assert_array_equal(
        data.load("fashion_mnist", "train", data_dir=tmp_path, source="files").images[..., 0],
        tiny_split("train", seed=1)[0],
    )


@pytest.mark.parametrize(
    "shape, error, match",
    [
        ((4, 28, 28), ValueError, "4 entries"),
        ((4, 28, 0, 1), ValueError, "H, W and C >= 1"),
        ((-1, 28, 28, 1), ValueError, "ints >= 0"),
        ((4, 28.0, 28, 1), TypeError, "tuple of ints"),
        ("4x28x28x1", TypeError, "tuple of ints"),
    ],
)
def test_lazy_images_name_a_bad_shape(shape, error, match):
    with pytest.raises(error, match=match):
        data.LazyImages(shape)
    assert data.LazyImages((0, 2, 3, 1)).shape == (0, 2, 3, 1)  # an empty selection is fine


@pytest.mark.parametrize(
    "records, image_shape, error, match",
    [
        (np.arange(3.0), (28, 28, 1), TypeError, "records must be a 1-d array of record indices"),
        (np.zeros((2, 2), int), (28, 28, 1), TypeError, "records must be"),
        (np.arange(3), (28, 28), ValueError, "image_shape must have 3 entries"),
    ],
)
def test_tfds_images_name_bad_records_or_image_shape(records, image_shape, error, match):
    with pytest.raises(error, match=match):
        data.TfdsImages("/nowhere", "train", records, image_shape)


def test_a_prepared_tfds_split_is_read_lazily_and_travels_to_workers(tmp_path, offline):
    """Only the labels are read when loading; rows, slices and a pickled copy (a Grain worker's) decode
    the records they index."""
    import pickle

    prepare_tiny_tfds(tmp_path, {"train": tiny_split("train"), "test": tiny_split("test")})
    loaded = data.load("fashion_mnist", "train", data_dir=tmp_path, source="tfds")
    images = loaded.images
    assert isinstance(images, data.TfdsImages) and images._source is None  # nothing decoded yet
    everything = np.asarray(images)
    assert everything.shape == (12, 28, 28, 1) and everything.dtype == np.uint8
    np.testing.assert_array_equal(images[[5, 0, 5]], everything[[5, 0, 5]])
    np.testing.assert_array_equal(images[-1], everything[-1])
    np.testing.assert_array_equal(images[3:9:2][[1, 2]], everything[3:9:2][[1, 2]])
    copy = pickle.loads(pickle.dumps(images[2:]))
    assert copy._source is None and copy.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(copy[[0, 9]], everything[[2, 11]])
    batch = next(data.batches(loaded.take(8), 4, seed=3))
    assert batch["image"].shape == (4, 28, 28, 1) and batch["image"].dtype == np.float32


def test_tfds_download_is_not_attempted_offline(tmp_path, monkeypatch, offline):
    import tensorflow_datasets as tfds

    def no_download(*args, **kwargs):
        raise AssertionError("download attempted while the host is unreachable")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    with pytest.raises(data.DataUnavailableError, match="download: www.cs.toronto.edu cannot be reached"):
        data.load("cifar10", "test", data_dir=tmp_path, source="tfds")


def test_cifar10_archive_reader(tmp_path):
    splits = {f"data_batch_{i}.bin": random_cifar(i, i) for i in range(1, 6)} | {
        "test_batch.bin": random_cifar(4, 9)
    }
    archive = write_cifar10_archive(tmp_path / "cifar-10-binary.tar.gz", splits)
    images, labels = data.read_cifar10_archive(archive, "train")
    np.testing.assert_array_equal(
        images, np.concatenate([splits[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    )
    assert images.shape == (15, 32, 32, 3) and labels.dtype == np.int32
    # One pixel by hand: record 0 of the test batch, channel 2 (blue) of row 3, column 5.
    test_images, _ = data.read_cifar10_archive(archive, "test")
    raw = archive_bytes = tarfile.open(archive).extractfile("cifar-10-batches-bin/test_batch.bin").read()
    assert test_images[0, 3, 5, 2] == raw[1 + 2 * 1024 + 3 * 32 + 5] and len(archive_bytes) == 4 * 3073
    with pytest.raises(ValueError, match="lacks data_batch_1.bin"):
        data.read_cifar10_archive(
            write_cifar10_archive(tmp_path / "x.tar.gz", {"test_batch.bin": splits["test_batch.bin"]}),
            "train",
        )


def test_download_without_tensorflow_fetches_original_files(tmp_path, monkeypatch, offline):
    """TFDS's download manager fetches checksummed files; jaxcnn keeps them in data_dir/name, reads them."""
    import tensorflow_datasets as tfds

    served = tmp_path / "server"
    served.mkdir()
    splits = cifar10_splits(2, 3)
    write_cifar10_archive(served / "cifar-10-binary.tar.gz", splits)
    requested = []

    class FakeDownloadManager:
        def __init__(self, *, url_infos, force_checksums_validation, **kwargs):
            assert force_checksums_validation and all(url in url_infos for url in url_infos)

        def download(self, urls):
            requested.extend(urls.values())
            return {name: served / name for name in urls}

    monkeypatch.setattr(datasets_lib, "_reachable", lambda host, **kwargs: True)
    monkeypatch.setattr(datasets_lib, "_has_tensorflow", lambda: False)
    monkeypatch.setattr(tfds.download, "DownloadManager", FakeDownloadManager)
    test = data.load("cifar10", "test", data_dir=tmp_path / "tfds")
    assert requested == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    np.testing.assert_array_equal(test.images, splits["test_batch.bin"][0])
    assert (tmp_path / "tfds" / "cifar10" / "cifar-10-binary.tar.gz").is_file()
    # Offline later: the kept files serve.
    monkeypatch.setattr(datasets_lib, "_reachable", lambda host, **kwargs: False)
    assert len(data.load("cifar10", "train", data_dir=tmp_path / "tfds")) == 10


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_debian_fashion_mnist(monkeypatch):
    monkeypatch.delenv("JAXCNN_FASHION_MNIST_DIR", raising=False)
    train = data.load("fashion_mnist", "train", source="files")
    test = data.load("fashion_mnist", "test", source="files")
    assert (len(train), len(test), train.image_shape) == (60_000, 10_000, (28, 28, 1))
    assert (
        np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    )
    pixels = train.images / 255.0
    assert train.mean[0] == pytest.approx(pixels.mean(), abs=1e-4)
    assert train.std[0] == pytest.approx(pixels.std(), abs=1e-4)
