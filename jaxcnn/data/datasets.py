"""Datasets as in-memory arrays: `load(name, split)` and where each one comes from.

`fashion_mnist`, `mnist` and `cifar10` come through tensorflow-datasets (array_record files, no
TensorFlow needed). Without network access, MNIST-format datasets are read from IDX files instead:
Fashion-MNIST from Debian's `dataset-fashion-mnist` package (TFDS cannot prepare those files
itself: they were recompressed, so its checksums reject them). `digits` ships with scikit-learn
and `synthetic` is generated, so both always work offline.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxcnn.data.idx import IdxFormatError, read_idx

SPLITS = ("train", "test")
SOURCES = ("auto", "tfds", "idx")


class DataUnavailableError(RuntimeError):
    """No source could provide the dataset; the message says how to get it."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled image split held in memory.

    Attributes:
      images: `(N, H, W, C)` uint8.
      labels: `(N,)` int32 in `[0, num_classes)`.
      mean, std: per-channel statistics of the training split on the [0, 1] scale, for `normalize`.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must have shape {self.images.shape[:1]}, got {self.labels.shape}")
        if not len(self.mean) == len(self.std) == self.images.shape[-1]:
            raise ValueError(f"mean and std need one value per channel ({self.images.shape[-1]})")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, ...]:
        """`(H, W, C)` of one example."""
        return tuple(self.images.shape[1:])

    def take(self, num_examples: int) -> ArrayDataset:
        """The first `num_examples` examples (all of them when 0 or more than there are)."""
        if num_examples <= 0 or num_examples >= len(self):
            return self
        return dataclasses.replace(
            self, images=self.images[:num_examples], labels=self.labels[:num_examples]
        )

    def __repr__(self) -> str:
        return (
            f"ArrayDataset({self.name}/{self.split}: {len(self)} images {self.image_shape}, "
            f"{self.num_classes} classes, from {self.source or 'memory'})"
        )


@dataclasses.dataclass(frozen=True)
class _TfdsInfo:
    """What jaxcnn knows of a TFDS dataset: where TFDS downloads it from and its offline sources."""

    download_host: str
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    idx_dirs: tuple[str, ...] = ()  # directories that may hold its IDX files
    debian_package: str = ""


_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                    "Ankle boot")  # fmt: skip
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_DIGIT_CLASSES = tuple(str(d) for d in range(10))

# Channel statistics of each training split (tests recompute them from the data when it is present).
_TFDS_DATASETS = {
    "fashion_mnist": _TfdsInfo(
        "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        _FASHION_CLASSES,
        (0.2860,),
        (0.3530,),
        idx_dirs=("/usr/share/datasets/fashion-mnist",),
        debian_package="dataset-fashion-mnist",
    ),
    "mnist": _TfdsInfo("storage.googleapis.com", _DIGIT_CLASSES, (0.1307,), (0.3081,)),
    "cifar10": _TfdsInfo(
        "www.cs.toronto.edu", _CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
_IDX_DATASETS = ("fashion_mnist", "mnist")
_DIGITS_TRAIN = 1437  # scikit-learn's 1,797 digits: the first 80% train, the rest test


def available() -> list[str]:
    """Names `load` accepts."""
    return sorted([*_TFDS_DATASETS, "digits", "synthetic"])


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    num_examples: int = 0,
    source: str = "auto",
) -> ArrayDataset:
    """Loads split `split` ("train" or "test") of dataset `name` into memory.

    Args:
      name: one of `available()`.
      data_dir: TFDS's data directory (default: TFDS's own, `~/tensorflow_datasets`); IDX files are also
        looked for in `data_dir/name/`.
      num_examples: keep only the first this many examples (0: all).
      source: for TFDS datasets, "tfds", "idx" or "auto": a prepared TFDS copy, else a TFDS download when
        its server answers, else IDX files (`$JAXCNN_<NAME>_DIR`, `data_dir/name/`, Debian's package).

    Raises:
      ValueError: an unknown name, split or source, or a bad `num_examples`.
      DataUnavailableError: no source has the data; the message says how to get it.
    """
    if name not in available():
        raise ValueError(f"dataset must be one of {', '.join(available())}, got {name!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
        raise ValueError(f"num_examples must be an int >= 0 (0 = all), got {num_examples!r}")
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if name == "digits":
        return digits(split).take(num_examples)
    if name == "synthetic":
        return synthetic(split).take(num_examples)
    if source == "idx" and name not in _IDX_DATASETS:
        raise ValueError(f"source 'idx' serves {', '.join(_IDX_DATASETS)}, not {name!r}")
    return _load_tfds_dataset(name, split, data_dir, source).take(num_examples)


def _load_tfds_dataset(name: str, split: str, data_dir, source: str) -> ArrayDataset:
    info = _TFDS_DATASETS[name]
    tried = []
    if source in ("auto", "tfds"):
        images_labels = _from_tfds(name, split, data_dir, info, tried, download=True)
        if images_labels is not None:
            return _dataset(name, split, *images_labels, info, source="tfds")
    if source in ("auto", "idx") and name in _IDX_DATASETS:
        for directory in _idx_directories(name, data_dir, info):
            if _has_idx_files(directory, split):
                images, labels = read_idx_split(directory, split)
                return _dataset(name, split, images[..., None], labels, info, source=f"IDX files in {directory}")
        tried.append(f"IDX files: none in {', '.join(map(str, _idx_directories(name, data_dir, info)))}")
    raise DataUnavailableError(_remedies(name, data_dir, info, tried))


def _from_tfds(name, split, data_dir, info: _TfdsInfo, tried: list[str], download: bool):
    """(images, labels) from TFDS, preparing the dataset first when its server answers; else None."""
    import tensorflow_datasets as tfds  # imported here: a second or two that digits runs don't need

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        if not (download and _reachable(info.download_host)):
            tried.append(f"TFDS: not prepared in {builder.data_dir} and {info.download_host} cannot be reached")
            return None
        try:
            builder.download_and_prepare(file_format="array_record")
        except Exception as error:  # a download can fail in many ways; the next source is tried
            tried.append(f"TFDS: download failed ({type(error).__name__}: {error})")
            return None
    try:
        records = builder.as_data_source(split=split)
        examples = records.__getitems__(range(len(records)))
    except Exception as error:  # e.g. prepared by TensorFlow as tfrecord, which needs TensorFlow to read
        tried.append(f"TFDS: cannot read {builder.data_dir} ({type(error).__name__}: {error})")
        return None
    images = np.stack([example["image"] for example in examples]).astype(np.uint8)
    labels = np.asarray([example["label"] for example in examples])
    return images, labels


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether `host` accepts a connection: asked first, since TFDS retries a dead network for minutes."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _idx_directories(name: str, data_dir, info: _TfdsInfo) -> list[Path]:
    directories = []
    if os.environ.get(f"JAXCNN_{name.upper()}_DIR"):
        directories.append(Path(os.environ[f"JAXCNN_{name.upper()}_DIR"]))
    if data_dir:
        directories.append(Path(data_dir) / name)
    return directories + [Path(d) for d in info.idx_dirs]


def _idx_path(directory: Path, filename: str) -> Path | None:
    for candidate in (directory / f"{filename}.gz", directory / filename):
        if candidate.is_file():
            return candidate
    return None


def _has_idx_files(directory: Path, split: str) -> bool:
    return all(_idx_path(directory, filename) for filename in _IDX_FILES[split])


def read_idx_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W)` uint8 and labels `(N,)` of an MNIST-format split in `directory`.

    The files are `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (`t10k-` for "test"),
    gzipped (`.gz`) or not.
    """
    image_file, label_file = (_idx_path(Path(directory), f) for f in _IDX_FILES[split])
    if image_file is None or label_file is None:
        raise FileNotFoundError(f"{directory} lacks {' and '.join(_IDX_FILES[split])} (.gz or not)")
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(f"{image_file}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}")
    if labels.shape != images.shape[:1]:
        raise IdxFormatError(f"{label_file}: {labels.shape} labels for {len(images)} images in {image_file}")
    return images, labels


def _dataset(name, split, images, labels, info, source) -> ArrayDataset:
    labels = np.asarray(labels, np.int32)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(info.class_names):
        raise DataUnavailableError(f"{name}/{split} from {source} has labels outside [0, {len(info.class_names)})")
    return ArrayDataset(name, split, images, labels, info.class_names, info.mean, info.std, source)


def _remedies(name: str, data_dir, info: _TfdsInfo, tried: list[str]) -> str:
    lines = [f"dataset {name!r} is not available here. Tried:", *(f"  - {t}" for t in tried), "To get it:"]
    lines.append(f"  - with network access to {info.download_host}, run again: TFDS downloads and prepares it")
    if info.debian_package:
        lines.append(f"  - without network: sudo apt-get install {info.debian_package}")
    if name in _IDX_DATASETS:
        lines.append(
            f"  - or put its four IDX files (train-images-idx3-ubyte.gz, ...) in a directory and set "
            f"JAXCNN_{name.upper()}_DIR to it"
        )
    lines.append("  - or train on a dataset that ships with jaxcnn: --config.dataset=digits")
    return "\n".join(lines)


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits_bunch = load_digits()
    # 0..16 intensities to the uint8 scale of the other datasets; 16 * 255 / 16 = 255 exactly.
    images = np.round(digits_bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    return images, digits_bunch.target.astype(np.int32)


def digits(split: str = "train") -> ArrayDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8x1, split 1,437 train / 360 test (no download)."""
    images, labels = _digits_arrays()
    train = images[:_DIGITS_TRAIN] / 255.0
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    return ArrayDataset(
        "digits", split, images[part], labels[part], _DIGIT_CLASSES, (float(train.mean()),), (float(train.std()),),
        source="scikit-learn",
    )  # fmt: skip


def synthetic(
    split: str = "train",
    *,
    image_shape: Sequence[int] = (28, 28, 1),
    num_classes: int = 10,
    num_examples: int | None = None,
    noise: float = 0.35,
    seed: int = 0,
) -> ArrayDataset:
    """Learnable random data: each class is a fixed random template plus per-example noise.

    The templates depend only on `seed`, the examples also on the split, so train and test share classes.
    Default size: 10,000 train and 2,000 test examples.
    """
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) of positive ints, got {image_shape}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    count = num_examples if num_examples is not None else (10_000 if split == "train" else 2_000)
    templates = np.random.default_rng([seed, 0]).uniform(0.15, 0.85, (num_classes, *image_shape))
    rng = np.random.default_rng([seed, 1 + SPLITS.index(split)])
    labels = rng.integers(0, num_classes, count).astype(np.int32)
    pixels = templates[labels] + noise * rng.standard_normal((count, *image_shape))
    images = np.round(255 * np.clip(pixels, 0.0, 1.0)).astype(np.uint8)
    channels = image_shape[-1]
    return ArrayDataset(
        "synthetic", split, images, labels, tuple(f"class {k}" for k in range(num_classes)),
        (0.5,) * channels, (0.3,) * channels, source="generated",
    )  # fmt: skip
