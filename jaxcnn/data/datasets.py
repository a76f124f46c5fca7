"""Datasets as arrays: `load(name, split)` and where each one comes from.

`fashion_mnist`, `mnist` and `cifar10` are TFDS datasets. They are read, in this order, from
1. a TFDS copy prepared as array_record files (read without TensorFlow, and lazily: `TfdsImages` decodes
   the records a batch gathers, so a prepared dataset larger than memory trains);
2. the dataset's original files (IDX for the MNIST family, the binary archive for CIFAR-10) in
   `$JAXCNN_<NAME>_DIR`, `<data dir>/<name>/` or a system package: Fashion-MNIST from Debian's
   `dataset-fashion-mnist` without network (TFDS cannot prepare those files itself: they were
   recompressed, so its checksums reject them);
3. a download when the server answers: TFDS prepares the dataset when TensorFlow is installed (it encodes
   images with it); otherwise TFDS's download manager fetches the original files, checked against TFDS's
   checksums, into `<data dir>/<name>/`.
`digits` ships with scikit-learn and `synthetic` is generated, so both always work offline.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import os
import shutil
import socket
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

from jaxcnn._registry import Registry
from jaxcnn._validate import Settings, boolean, choice, integer, number
from jaxcnn._validate import shape as check_shape  # `shape` is a parameter's name here
from jaxcnn.data.idx import IdxFormatError, read_idx

SPLITS = ("train", "test")
SOURCES = ("auto", "tfds", "files")
COLORS = ("auto", "grayscale", "rgb")  # of an image folder's images
BAD_IMAGES = ("skip", "raise")  # what an unreadable image of an image folder does


class DataUnavailableError(RuntimeError):
    """No source could provide the dataset; the message says how to get it."""


class UnreadableImageError(ValueError):
    """An image file that cannot be read or decoded (and `bad_images` is "raise"); the message names it.

    Raised while a folder is loaded, or while batches gather its images (in a Grain worker too, from where
    it reaches the training process through the iterator).
    """


def printable(name: object) -> str:
    """`name` (a path or a string) for a log line or message: each character that is not printable (a
    newline, the ESC of a terminal's escape sequence) written as its Python escape, so that a file or
    folder name can neither forge log lines nor recolor a terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(name))


def check_image_size(image_size: int) -> int:
    """`image_size` (0, or the side images are resized to), refused where one image would exceed Pillow's
    decompression limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89,478,485 pixels unless raised), before anything
    is decoded: a decoded image of 30000 x 30000 alone takes 2.7 GB in RGB.

    Raises:
      TypeError, ValueError: not an int >= 0, or too large (the message gives the memory it would need).
    """
    integer(image_size, "image_size", minimum=0)
    if image_size:
        from PIL import Image  # imported here: only image folders need it

        pixels = image_size * image_size
        if Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
            raise ValueError(
                f"image_size {image_size} makes every image {image_size}x{image_size} = {pixels:,} pixels: "
                f"{pixels * 3 / 1e9:.1f} GB of memory each in RGB ({pixels * 12 / 1e9:.1f} GB as float32), "
                f"beyond Pillow's decompression limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
                "(PIL.Image.MAX_IMAGE_PIXELS)"
            )
    return image_size


class LazyImages:
    """Images as an array-like uint8 `(N, H, W, C)`, read when indexed.

    `images[rows]` reads those rows (in Grain's worker processes when `data.workers` > 0: the batches
    gather from it), `images[a:b]` is a lazy view of that slice, `np.asarray(images)` reads them all: a
    dataset larger than memory trains without being loaded whole. Subclasses say how to read rows
    (`_read`) and how to view a subset of them (`_select`).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, shape: tuple[int, int, int, int]):
        """`shape`: `(N, H, W, C)`, N >= 0 images of H, W, C >= 1.

        Raises:
          TypeError, ValueError: `shape` is not four such ints.
        """
        count, *image = check_shape(shape, "shape", length=4, minimum=0)
        if min(image) < 1:
            raise ValueError(f"shape (N, H, W, C) needs H, W and C >= 1, got {shape!r}")
        self.shape = (count, *image)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._select(np.arange(len(self))[index])
        if np.ndim(index) == 0:
            return self._read(np.arange(len(self))[[index]])[0]
        rows = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, np.int64)
        return self._read(rows) if len(rows) else np.empty((0, *self.shape[1:]), np.uint8)

    def __array__(self, dtype=None, copy=None):
        return self[np.arange(len(self))].astype(dtype or np.uint8, copy=False)

    def gather(self, rows: np.ndarray, draw: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        """`(images, readable)`: uint8 `(len(rows), H, W, C)` and bool `(len(rows),)`. Where a subclass
        skips images it cannot read (an image folder's with `bad_images="skip"`), such an image is zeros
        and not `readable`; otherwise its error is raised. `draw`: the training batch's `(seed, epoch)`, from
        which a subclass that views images at random (`data.imagenet`) draws; others ignore it. Here:
        `self[rows]`, every one readable."""
        return self[rows], np.ones(len(rows), bool)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """uint8 `(len(rows), H, W, C)`: the images at `rows` (a non-empty int array)."""
        raise NotImplementedError

    def _select(self, rows: np.ndarray) -> LazyImages:
        """The images at `rows`, still unread."""
        raise NotImplementedError


class TfdsImages(LazyImages):
    """The images of a TFDS split prepared as array_record files, decoded when indexed.

    Picklable for Grain's workers: each process opens the records itself.
    """

    def __init__(self, directory: str, split: str, records: np.ndarray, image_shape: tuple[int, int, int]):
        records = np.asarray(records)
        if records.ndim != 1 or not np.issubdtype(records.dtype, np.integer):
            raise TypeError(
                f"records must be a 1-d array of record indices, got {records.dtype} {records.shape}"
            )
        height, width, channels = check_shape(image_shape, "image_shape", length=3)
        super().__init__((len(records), height, width, channels))
        self.directory, self.split, self.records = directory, split, records
        self._source = None

    def _read(self, rows):
        if self._source is None:
            self._source = _data_source(self.directory, self.split)
        examples = self._source.__getitems__(self.records[rows].tolist())
        return np.stack([example["image"] for example in examples]).astype(np.uint8, copy=False)

    def _select(self, rows):
        return TfdsImages(self.directory, self.split, self.records[rows], self.shape[1:])

    def __getstate__(self):
        return {**self.__dict__, "_source": None}


def _data_source(directory: str, split: str):
    import tensorflow_datasets as tfds

    return tfds.builder_from_directory(directory).as_data_source(split=split)


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A labelled image split: labels in memory, images in memory or read when a batch gathers them.

    Attributes:
      images: `(N, H, W, C)` uint8: a numpy array, or `LazyImages` read when indexed (a prepared TFDS
        copy's records, an image folder's files).
      labels: `(N,)` int32 in `[0, num_classes)`.
      mean, std: per-channel statistics of the training split on the [0, 1] scale, for `normalize`:
        finite, std > 0 (it divides).
    """

    name: str
    split: str
    images: np.ndarray | LazyImages
    labels: np.ndarray
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str = ""

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.dtype != np.uint8:
            raise ValueError(
                f"images must be uint8 (N, H, W, C), got {self.images.dtype} {self.images.shape}"
            )
        if self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must have shape {self.images.shape[:1]}, got {self.labels.shape}")
        if not len(self.mean) == len(self.std) == self.images.shape[-1]:
            raise ValueError(f"mean and std need one value per channel ({self.images.shape[-1]})")
        if not (np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std)) and min(self.std) > 0):
            raise ValueError(
                "mean and std must be finite and std > 0 (normalize divides by it), "
                f"got {self.mean}, {self.std}"
            )

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
        return dataclasses.replace(self, images=self.images[:num_examples], labels=self.labels[:num_examples])

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
    system_dirs: tuple[str, ...] = ()  # directories where system packages put its original files
    debian_package: str = ""


_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot")  # fmt: skip
_CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_DIGIT_CLASSES = tuple(str(d) for d in range(10))

# Channel statistics of each training split (tests recompute them from the data when it is present).
_TFDS_DATASETS = {
    "fashion_mnist": _TfdsInfo(
        "fashion-mnist.s3-website.eu-central-1.amazonaws.com",
        _FASHION_CLASSES,
        (0.2860,),
        (0.3530,),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        debian_package="dataset-fashion-mnist",
    ),
    "mnist": _TfdsInfo("storage.googleapis.com", _DIGIT_CLASSES, (0.1307,), (0.3081,)),
    "cifar10": _TfdsInfo(
        "www.cs.toronto.edu", _CIFAR10_CLASSES, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}  # fmt: skip
_CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
_DIGITS_TRAIN = (
    1437  # of scikit-learn's 1,797 digits, after a fixed shuffle; the other 360 are the test split
)


DATASETS: Registry[Callable[..., ArrayDataset]] = Registry("dataset")
# A loader keeps its own type through @register.
_Loader = TypeVar("_Loader", bound=Callable[..., ArrayDataset])


@overload
def register(name: str, loader: None = None, *, overwrite: bool = False) -> Callable[[_Loader], _Loader]: ...
@overload
def register(name: str, loader: _Loader, *, overwrite: bool = False) -> _Loader: ...
def register(name: str, loader: Callable[..., ArrayDataset] | None = None, *, overwrite: bool = False) -> Any:
    """Adds a dataset that `load` (and `config.dataset`) accepts, as a decorator or a call.

        @jaxcnn.data.register("my_scans")
        def my_scans(split, *, data_dir=None, source="auto"):
            images, labels = ...  # uint8 (N, H, W, C), int (N,)
            return ArrayDataset("my_scans", split, images, labels, class_names, mean, std)

    `loader(split, *, data_dir, source)` returns the split ("train" or "test") as an `ArrayDataset`, with
    the channel statistics of its training split. Registering a taken name raises unless `overwrite=True`.
    """
    return DATASETS.register(name, loader, overwrite=overwrite)


def available() -> list[str]:
    """Names `load` accepts."""
    return DATASETS.names()


@dataclasses.dataclass(frozen=True)
class DataSettings(Settings):
    """`config.data`: where datasets are read from (`dir` and `source` may change when a run is resumed),
    and how an image folder (`config.dataset="folder"`, see `data.folder`) or encoded images
    (`"imagenet"`, see `data.imagenet`) are read.

    Attributes:
      dir: TFDS's data directory, where original files are also looked for and downloaded to
        (`dir/<name>/`); "" = TFDS's default, `~/tensorflow_datasets`. For "folder": the image folder.
      source: for TFDS datasets: "auto" (the order in this module's docstring), "tfds" (a prepared TFDS
        copy, or TFDS's preparation) or "files" (the original files).
      image_size: for "folder": > 0 resizes every image to this square size; 0 = all have one size.
        For "imagenet": the side of its views, required (224 for ImageNet).
      color: for "folder": "grayscale", "rgb", or "auto" (grayscale when the first training image is).
      holdout: for "folder" and "imagenet" without train/ and test/ subfolders: the fraction of each
        class held out.
      bad_images: for "folder" and "imagenet": an image that cannot be read or decoded is "skip"ped
        (named and counted in the log; see `data.folder`) or "raise"s an `UnreadableImageError`. The
        batches are the same either way (a skipped image is masked out), so it may change on resume.
      trivial_augment: for "imagenet": each training view goes through one TrivialAugment operation.
      workers: processes that gather (and read and decode) the training batches (Grain's `mp_prefetch`);
        0 = the main process. The batches are the same for any number, so it may change on resume.
    """

    dir: str = dataclasses.field(default="", metadata={"resumable": True})
    source: str = dataclasses.field(default="auto", metadata={"resumable": True})
    image_size: int = 0
    color: str = "auto"
    holdout: float = 0.0
    bad_images: str = dataclasses.field(default="skip", metadata={"resumable": True})
    trivial_augment: bool = False
    workers: int = dataclasses.field(default=0, metadata={"resumable": True})

    def __post_init__(self):
        if not isinstance(self.dir, str):
            raise TypeError(f'dir must be a path (a string; "" = TFDS\'s default), got {self.dir!r}')
        choice(self.source, "source", SOURCES)
        check_image_size(self.image_size)
        choice(self.color, "color", COLORS)
        number(self.holdout, "holdout", minimum=0.0, below=1.0)
        choice(self.bad_images, "bad_images", BAD_IMAGES)
        boolean(self.trivial_augment, "trivial_augment")
        integer(self.workers, "workers", minimum=0)

    def load_options(self, dataset: str) -> dict[str, Any]:
        """The keyword arguments of `load(dataset, ...)` this section gives."""
        options: dict[str, Any] = {"data_dir": self.dir or None, "source": self.source}
        if dataset == "folder":
            options.update(
                image_size=self.image_size, color=self.color, holdout=self.holdout, bad_images=self.bad_images
            )
        elif dataset == "imagenet":
            options.update(
                image_size=self.image_size,
                holdout=self.holdout,
                bad_images=self.bad_images,
                trivial_augment=self.trivial_augment,
            )
        return options


def load(
    name: str,
    split: str = "train",
    *,
    data_dir: str | os.PathLike | None = None,
    num_examples: int = 0,
    source: str = "auto",
    **options: Any,
) -> ArrayDataset:
    """Loads split `split` ("train" or "test") of dataset `name` into memory.

    Args:
      name: one of `available()`.
      data_dir: TFDS's data directory (default: TFDS's own, `~/tensorflow_datasets`); original files are
        looked for, and downloaded to, `data_dir/name/`.
      num_examples: keep only the first this many examples (0: all).
      source: for TFDS datasets, "auto" (the order in this module's docstring), "tfds" (a prepared TFDS
        copy, or TFDS's preparation) or "files" (the original files).
      **options: the dataset's own (those of `data.load_folder` for "folder").

    Raises:
      ValueError: an unknown name, split or source, or a bad `num_examples`.
      DataUnavailableError: no source has the data; the message says how to get it.
    """
    loader = DATASETS.get(name)
    choice(split, "split", SPLITS)
    integer(num_examples, "num_examples", minimum=0)
    choice(source, "source", SOURCES)
    return loader(split, data_dir=data_dir, source=source, **options).take(num_examples)


def _not_prepared_notice(record: logging.LogRecord) -> bool:
    """False for TFDS's warning that a dataset has no prepared copy ("Variant folder ... has no
    dataset_info.json"): the usual case offline, which the error says if no source has the dataset."""
    return not record.getMessage().startswith("Variant folder")


def _load_tfds_dataset(name: str, split: str, *, data_dir=None, source: str = "auto") -> ArrayDataset:
    import tensorflow_datasets as tfds  # imported here: a second or two that digits runs don't need

    info = _TFDS_DATASETS[name]
    builder = tfds.builder(name, data_dir=data_dir)
    local = Path(builder.data_dir_root) / name  # where downloaded original files are kept
    tried: list[str] = []  # each source tried and why it failed, for the message
    from_tfds = source in ("auto", "tfds")
    from_files = source in ("auto", "files")
    arrays = (from_tfds and _read_prepared(builder, split, tried)) or (
        from_files and _read_files(name, split, _file_directories(name, local, info), tried)
    )
    if not arrays:
        if not _reachable(info.download_host):
            tried.append(f"download: {info.download_host} cannot be reached")
        elif from_tfds and _has_tensorflow() or from_files:
            try:
                if from_tfds and _has_tensorflow():
                    builder.download_and_prepare(file_format="array_record")
                    arrays = _read_prepared(builder, split, tried)
                else:
                    _download_files(name, builder, local)
                    arrays = _read_files(name, split, [local], tried)
            except Exception as error:  # a download fails in many ways; the message lists the remedies
                tried.append(f"download: failed ({type(error).__name__}: {error})")
        else:
            tried.append(
                "TFDS: preparing images needs TensorFlow (pip install tensorflow); source='auto' does not"
            )
    if not arrays:
        raise DataUnavailableError(_remedies(name, info, tried))
    images, labels, description = arrays
    return _dataset(name, split, images, labels, info, source=description)


_LABELS_PER_READ = 10_000  # records whose labels are read at once (their images are not decoded)


def _read_prepared(builder, split: str, tried: list[str]):
    """(images, labels) of a TFDS dataset prepared as array_record files (read without TensorFlow): the
    labels now, the images (`TfdsImages`) when a batch gathers them."""
    import tensorflow_datasets as tfds

    absl_logger = logging.getLogger("absl")
    absl_logger.addFilter(_not_prepared_notice)
    try:
        prepared = builder.is_prepared()
    finally:
        absl_logger.removeFilter(_not_prepared_notice)
    if not prepared:
        tried.append(f"TFDS: not prepared in {printable(builder.data_dir)}")
        return None
    try:
        undecoded = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        labels = np.asarray([
            example["label"]
            for start in range(0, len(undecoded), _LABELS_PER_READ)
            for example in undecoded.__getitems__(range(start, min(start + _LABELS_PER_READ, len(undecoded))))
        ])  # fmt: skip
    except Exception as error:  # e.g. prepared as tfrecord, which only TensorFlow reads
        tried.append(f"TFDS: cannot read {printable(builder.data_dir)} ({type(error).__name__}: {error})")
        return None
    image_shape = tuple(builder.info.features["image"].shape)
    images = TfdsImages(str(builder.data_dir), split, np.arange(len(labels)), image_shape)
    return images, labels, "tfds"


def _read_files(name: str, split: str, directories: list[Path], tried: list[str]):
    """(images, labels, description) from the dataset's original files in the first directory holding them."""
    for directory in directories:
        if name == "cifar10" and (directory / _CIFAR10_ARCHIVE).is_file():
            return (
                *read_cifar10_archive(directory / _CIFAR10_ARCHIVE, split),
                printable(directory / _CIFAR10_ARCHIVE),
            )
        if name != "cifar10" and all(_idx_path(directory, f) for f in _IDX_FILES[split]):
            images, labels = read_idx_split(directory, split)
            return images[..., None], labels, f"IDX files in {printable(directory)}"
    tried.append(f"files: none in {', '.join(map(printable, directories))}")
    return None


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    """Whether `host` accepts a connection: asked first, since TFDS retries a dead network for minutes."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def _has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def _download_files(name: str, builder, directory: Path) -> None:
    """The dataset's original files through TFDS's download manager (checked against TFDS's checksums).

    TFDS's own preparation encodes images with TensorFlow; without it, jaxcnn reads these files itself.
    """
    import tensorflow_datasets as tfds

    url_infos = builder.url_infos
    manager = tfds.download.DownloadManager(
        download_dir=builder.data_dir_root / "downloads",
        url_infos=url_infos,
        dataset_name=name,
        force_checksums_validation=True,
    )
    paths = manager.download({url.rsplit("/", 1)[-1]: url for url in url_infos})
    directory.mkdir(parents=True, exist_ok=True)
    for filename, path in paths.items():
        shutil.copyfile(path, directory / filename)


def _file_directories(name: str, local: Path, info: _TfdsInfo) -> list[Path]:
    """Where the dataset's original files may be: `$JAXCNN_<NAME>_DIR`, `<data dir>/<name>`, system dirs."""
    variable = f"JAXCNN_{name.upper()}_DIR"
    directories = [Path(os.environ[variable])] if os.environ.get(variable) else []
    return directories + [local] + [Path(d) for d in info.system_dirs]


def _idx_path(directory: Path, filename: str) -> Path | None:
    for candidate in (directory / f"{filename}.gz", directory / filename):
        if candidate.is_file():
            return candidate
    return None


def read_idx_split(directory: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, H, W)` uint8 and labels `(N,)` of an MNIST-format split in `directory`.

    The files are `train-images-idx3-ubyte` and `train-labels-idx1-ubyte` (`t10k-` for "test"),
    gzipped (`.gz`) or not.
    """
    image_file, label_file = (_idx_path(Path(directory), f) for f in _IDX_FILES[split])
    if image_file is None or label_file is None:
        raise FileNotFoundError(
            f"{printable(directory)} lacks {' and '.join(_IDX_FILES[split])} (.gz or not)"
        )
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise IdxFormatError(
            f"{printable(image_file)}: expected uint8 images (N, H, W), got {images.dtype} {images.shape}"
        )
    if labels.shape != images.shape[:1]:
        raise IdxFormatError(
            f"{printable(label_file)}: {labels.shape} labels for {len(images)} images in "
            f"{printable(image_file)}"
        )
    return images, labels


def _member_bytes(archive: tarfile.TarFile, member: tarfile.TarInfo, path: str | os.PathLike) -> bytes:
    file = archive.extractfile(member)  # None for a member that is no regular file (a folder, a link)
    if file is None:
        raise ValueError(
            f"{printable(path)}: {printable(member.name)} is not a file: not CIFAR-10's binary archive"
        )
    return file.read()


def read_cifar10_archive(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images `(N, 32, 32, 3)` uint8 and labels `(N,)` from CIFAR-10's archive `cifar-10-binary.tar.gz`.

    Each record of its `.bin` files is one label byte and 3,072 pixel bytes, channel-major (3, 32, 32).
    """
    members = [f"data_batch_{i}.bin" for i in range(1, 6)] if split == "train" else ["test_batch.bin"]
    with tarfile.open(path) as archive:
        files = {Path(m.name).name: m for m in archive.getmembers()}
        missing = [m for m in members if m not in files]
        if missing:
            raise ValueError(f"{printable(path)} lacks {', '.join(missing)}: not CIFAR-10's binary archive")
        raw = b"".join(_member_bytes(archive, files[m], path) for m in members)
    if len(raw) % 3073:
        raise ValueError(f"{printable(path)}: {len(raw)} bytes is not a whole number of 3,073-byte records")
    records = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
    return records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), records[:, 0].astype(np.int32)


def _dataset(name, split, images, labels, info, source) -> ArrayDataset:
    labels = np.asarray(labels, np.int32)
    if labels.min(initial=0) < 0 or labels.max(initial=0) >= len(info.class_names):
        raise DataUnavailableError(
            f"{name}/{split} from {source} has labels outside [0, {len(info.class_names)})"
        )
    return ArrayDataset(name, split, images, labels, info.class_names, info.mean, info.std, source)


def _remedies(name: str, info: _TfdsInfo, tried: list[str]) -> str:
    lines = [f"dataset {name!r} is not available here. Tried:", *(f"  - {t}" for t in tried), "To get it:"]
    lines.append(f"  - with network access to {info.download_host}, run again: it is downloaded once")
    if info.debian_package:
        lines.append(f"  - without network: sudo apt-get install {info.debian_package}")
    files = (
        "cifar-10-binary.tar.gz"
        if name == "cifar10"
        else "its four IDX files (train-images-idx3-ubyte.gz, ...)"
    )
    lines.append(f"  - or put {files} in a directory and set JAXCNN_{name.upper()}_DIR to it")
    lines.append("  - or train on a dataset that ships with jaxcnn: --config.dataset=digits")
    return "\n".join(lines)


@functools.cache
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    # scikit-learn's own file, read as its `load_digits` reads it (rows of 64 pixels then the label),
    # without importing scikit-learn: that import alone took 1.5-2.7 s of each run on digits.
    package = importlib.util.find_spec("sklearn")
    if package is None or not package.submodule_search_locations:
        raise DataUnavailableError("the digits dataset ships with scikit-learn: pip install scikit-learn")
    table = np.loadtxt(
        Path(package.submodule_search_locations[0]) / "datasets/data/digits.csv.gz", delimiter=","
    )
    pixels, target = table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int32)
    # Shuffled once, with a fixed seed: the file's order is not random (its last fifth is harder:
    # three models all plateaued at 96.9% on it), so a test split should be a sample of the whole.
    order = np.random.default_rng(0).permutation(len(target))
    # 0..16 intensities to the uint8 scale of the other datasets; 16 * 255 / 16 = 255 exactly.
    images = np.round(pixels[order] * (255 / 16)).astype(np.uint8)[..., None]
    return images, target[order]


def digits(split: str = "train") -> ArrayDataset:
    """scikit-learn's 1,797 handwritten digits, 8x8x1, split 1,437 train / 360 test (no download)."""
    images, labels = _digits_arrays()
    train = images[:_DIGITS_TRAIN] / 255.0
    part = slice(None, _DIGITS_TRAIN) if split == "train" else slice(_DIGITS_TRAIN, None)
    statistics = (float(train.mean()),), (float(train.std()),)
    return ArrayDataset("digits", split, images[part], labels[part], _DIGIT_CLASSES, *statistics, "sklearn")


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
    image_shape = check_shape(image_shape, "image_shape (H, W, C)", length=3)
    integer(num_classes, "num_classes", minimum=2)
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


def _generated(make: Callable[[str], ArrayDataset]) -> Callable[..., ArrayDataset]:
    """A loader for a dataset made in memory: no directory or source to choose."""

    def load_split(split: str, *, data_dir=None, source: str = "auto") -> ArrayDataset:
        return make(split)

    return load_split


for _name in _TFDS_DATASETS:
    register(_name, functools.partial(_load_tfds_dataset, _name))
register("digits", _generated(digits))
register("synthetic", _generated(synthetic))
