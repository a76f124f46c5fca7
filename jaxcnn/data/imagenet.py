"""ImageNet-grade input: encoded images (JPEG, PNG) read from a folder or from ArrayRecord shards, decoded
to the crop a batch needs, in Grain's worker processes with `data.workers`.

    config.dataset = "imagenet"; config.data.dir = "/data/imagenet"; config.data.image_size = 224

`data.dir` holds either an image folder (`train/` and `test/` of class folders, or class folders and
`data.holdout`, as `data.folder` reads them: link ImageNet's `val/` as `test/`) or the shards that
`experiments/convert_to_shards.py` writes from one (`SHARD_INDEX` names them).

Each image is viewed as a box of the original, resized (bilinear) to `image_size` x `image_size` RGB:
- training batches (`draw` given, see `LazyImages.gather`): a random-resized ("Inception") crop, area
  fraction in `SCALE`, aspect ratio in `RATIO` (log-uniform), as torchvision's `RandomResizedCrop`;
  a left-right flip with probability 1/2; with `trivial_augment`, one TrivialAugment ("wide") operation.
  The draws are a function of `(seed, epoch, row)` only: the same with any number of workers, and on resume;
- evaluation and the statistics: the center square of side `CROP_FRACTION` x the shorter side (Flax's
  imagenet example: resize to image_size / 0.875, then center crop).
A JPEG is decoded at the smallest DCT scale (1/8, 1/4, 1/2 of its size: Pillow's `Image.draft`, libjpeg-turbo)
that keeps the box at least `image_size` pixels a side, so a 500x375 photo cropped to 224 often decodes at
half its size.

Bad images follow `data.bad_images` as in image folders (`data.folder`): a file whose header does not read
is left out of a folder's split while loading ("skip") or raises; one that does not decode in a batch is
masked out there. The channel statistics come from the center crops of a fixed sample of at most
`STATISTICS_SAMPLE` training images, cached beside the data.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from jaxcnn._validate import boolean, choice, integer, number
from jaxcnn.data import folder
from jaxcnn.data.datasets import (
    BAD_IMAGES,
    SPLITS,
    ArrayDataset,
    LazyImages,
    UnreadableImageError,
    check_image_size,
    printable,
    register,
)

if TYPE_CHECKING:  # Pillow is imported where images are decoded
    from PIL import Image

SCALE = (0.08, 1.0)  # the random crop's fraction of the image's area
RATIO = (3 / 4, 4 / 3)  # its width / height
CROP_FRACTION = 0.875  # evaluation's center square, of the shorter side
CROP_ATTEMPTS = 10  # draws of a random crop before falling back to the center (torchvision's)
SHARD_INDEX = "jaxcnn_shards.json"
SHARD_FORMAT = 1
STATISTICS_SAMPLE = 2048
_VIEWS_STREAM = 0x76696577  # tags the per-image random streams apart from the epoch order's
_RECORD_HEADER = struct.Struct("<iH")  # a shard record: label, name length; then the name (UTF-8), the file


def random_resized_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """`(left, top, box_width, box_height)` of a random crop of a `width` x `height` image: area fraction
    uniform in `SCALE`, aspect ratio log-uniform in `RATIO`, position uniform; after `CROP_ATTEMPTS` draws
    that do not fit, the largest center box whose ratio is within `RATIO` (torchvision's algorithm)."""
    area = width * height
    for _ in range(CROP_ATTEMPTS):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        box_width, box_height = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = int(rng.integers(0, height - box_height + 1))
            left = int(rng.integers(0, width - box_width + 1))
            return left, top, box_width, box_height
    if width / height < RATIO[0]:
        box_width, box_height = width, round(width / RATIO[0])
    elif width / height > RATIO[1]:
        box_width, box_height = round(height * RATIO[1]), height
    else:
        box_width, box_height = width, height
    return (width - box_width) // 2, (height - box_height) // 2, box_width, box_height


def center_box(width: int, height: int) -> tuple[int, int, int, int]:
    """`(left, top, side, side)`: the center square of side `CROP_FRACTION` x the shorter side (at least 1),
    placed as Flax's imagenet example places it (odd margins round the box down and right)."""
    side = max(1, int(CROP_FRACTION * min(width, height)))
    return (width - side + 1) // 2, (height - side + 1) // 2, side, side


def draft_scale(box_width: int, box_height: int, image_size: int) -> int:
    """The largest JPEG DCT reduction (1, 2, 4 or 8) that keeps a box of `box_width` x `box_height` at least
    `image_size` pixels on each side."""
    fits = min(box_width, box_height) // image_size
    return next(scale for scale in (8, 4, 2, 1) if scale <= max(fits, 1))


def _sheared(image, shear_x: float, shear_y: float):
    from PIL import Image

    return image.transform(image.size, Image.Transform.AFFINE, (1, shear_x, 0, shear_y, 1, 0))


def _translated(image, right: float, down: float):
    from PIL import Image

    return image.transform(image.size, Image.Transform.AFFINE, (1, 0, -right, 0, 1, -down))


# TrivialAugment's operations ("wide" ranges, torchvision's TrivialAugmentWide): name -> (magnitude of each
# of the 31 bins, whether its sign is drawn, `apply(image, magnitude)`).
_BINS = 31


@functools.cache
def _trivial_operations():
    from PIL import ImageEnhance, ImageOps

    def enhance(kind):
        return lambda image, m: kind(image).enhance(1 + m)

    linear = np.linspace
    return {
        "identity": (np.zeros(_BINS), False, lambda image, m: image),
        "shear_x": (linear(0, 0.99, _BINS), True, lambda image, m: _sheared(image, m, 0)),
        "shear_y": (linear(0, 0.99, _BINS), True, lambda image, m: _sheared(image, 0, m)),
        "translate_x": (linear(0, 32, _BINS), True, lambda image, m: _translated(image, m, 0)),
        "translate_y": (linear(0, 32, _BINS), True, lambda image, m: _translated(image, 0, m)),
        "rotate": (linear(0, 135, _BINS), True, lambda image, m: image.rotate(m)),
        "brightness": (linear(0, 0.99, _BINS), True, enhance(ImageEnhance.Brightness)),
        "color": (linear(0, 0.99, _BINS), True, enhance(ImageEnhance.Color)),
        "contrast": (linear(0, 0.99, _BINS), True, enhance(ImageEnhance.Contrast)),
        "sharpness": (linear(0, 0.99, _BINS), True, enhance(ImageEnhance.Sharpness)),
        "posterize": (
            8 - np.round(np.arange(_BINS) / ((_BINS - 1) / 6)),
            False,
            lambda image, m: ImageOps.posterize(image, int(m)),
        ),
        "solarize": (linear(255, 0, _BINS), False, lambda image, m: ImageOps.solarize(image, m)),
        "autocontrast": (np.zeros(_BINS), False, lambda image, m: ImageOps.autocontrast(image)),
        "equalize": (np.zeros(_BINS), False, lambda image, m: ImageOps.equalize(image)),
    }


TRIVIAL_OPERATIONS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate",
                      "brightness", "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast",
                      "equalize")  # fmt: skip


def trivial_augment(
    rng: np.random.Generator, image: Image.Image, operation: str | None = None, bin_index: int | None = None
) -> Image.Image:
    """`image` (a Pillow RGB image) through one TrivialAugment operation (Müller & Hutter, 2021), drawn
    uniformly from `TRIVIAL_OPERATIONS` with a magnitude bin uniform in [0, 31) and, for signed operations,
    a random sign; `operation` and `bin_index` fix those draws (the sign is still drawn). Geometric
    operations fill with black, as torchvision's."""
    operations = _trivial_operations()
    name = TRIVIAL_OPERATIONS[rng.integers(len(operations))] if operation is None else operation
    index = int(rng.integers(_BINS)) if bin_index is None else bin_index
    magnitudes, signed, apply = operations[choice(name, "operation", TRIVIAL_OPERATIONS)]
    magnitude = float(magnitudes[index])
    if signed and rng.integers(2):
        magnitude = -magnitude
    return apply(image, magnitude)


def decode_view(
    data: bytes, image_size: int, rng: np.random.Generator | None, trivial: bool = False
) -> np.ndarray:
    """uint8 `(image_size, image_size, 3)`: the encoded image `data` cropped and resized, decoding a JPEG at
    the DCT scale the box allows (`draft_scale`). `rng`: the training view (`random_resized_box`, a flip,
    `trivial_augment` when `trivial`); None: the evaluation view (`center_box`). Pillow's errors for a damaged
    file (and a `DecompressionBombWarning`, as an error) pass through."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            left, top, box_width, box_height = (
                center_box(width, height) if rng is None else random_resized_box(rng, width, height)
            )
            reduction, scale = draft_scale(box_width, box_height, image_size), 1.0
            if reduction > 1:  # a no-op (None) for other formats than JPEG
                drafted = image.draft("RGB", (width // reduction, height // reduction))
                scale = width / drafted[1][2] if drafted else 1
            view = folder._eight_bit(image, data)
            if view.mode != "RGB":
                view = view.convert("RGB")
            box = (left / scale, top / scale, (left + box_width) / scale, (top + box_height) / scale)
            view = view.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box)
    if rng is not None:
        if rng.integers(2):
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if trivial:
            view = trivial_augment(rng, view)
    return np.asarray(view, np.uint8)


def view_rng(draw: Sequence[int], row: int) -> np.random.Generator:
    """The random stream of row `row`'s training view in the batch drawn from `draw` (its seed, epoch)."""
    return np.random.default_rng([_VIEWS_STREAM, *draw, int(row)])


class _FileSource:
    """Encoded images as files (picklable)."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)

    def __len__(self):
        return len(self.paths)

    def name(self, row: int) -> str:
        return str(self.paths[row])

    def read(self, row: int) -> bytes:
        with open(self.paths[row], "rb", buffering=0) as file:
            return file.read()

    def select(self, rows) -> _FileSource:
        return _FileSource([self.paths[r] for r in rows])


class _ShardSource:
    """Encoded images as records of ArrayRecord shards (picklable: each process opens the shards itself)."""

    def __init__(self, shards: list[str], records: np.ndarray):
        self.shards, self.records = list(shards), np.asarray(records, np.int64)
        self._reader: Any = None  # grain's ArrayRecordDataSource, opened in each process

    def __len__(self):
        return len(self.records)

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}

    def _record(self, row: int) -> tuple[int, str, bytes]:
        if self._reader is None:
            import grain

            self._reader = grain.sources.ArrayRecordDataSource(self.shards)
        return parse_record(self._reader[int(self.records[row])])

    def name(self, row: int) -> str:
        record = int(self.records[row])
        return f"{self._record(row)[1]} (record {record} of the shards in {Path(self.shards[0]).parent})"

    def read(self, row: int) -> bytes:
        return self._record(row)[2]

    def select(self, rows) -> _ShardSource:
        return _ShardSource(self.shards, self.records[rows])


def encode_record(label: int, name: str, data: bytes) -> bytes:
    """A shard record: `_RECORD_HEADER` (label, the name's length), the name in UTF-8, the encoded file."""
    encoded_name = name.encode()
    return _RECORD_HEADER.pack(label, len(encoded_name)) + encoded_name + data


def parse_record(record: bytes) -> tuple[int, str, bytes]:
    """`(label, name, encoded image)` of a record `encode_record` wrote."""
    label, length = _RECORD_HEADER.unpack_from(record)
    start = _RECORD_HEADER.size
    return label, record[start : start + length].decode(), record[start + length :]


class EncodedImages(LazyImages):
    """Encoded images decoded to `(image_size, image_size, 3)` views when gathered: random training views
    where `gather` is given a `draw` and `augment` is True, evaluation views otherwise."""

    def __init__(
        self,
        source: _FileSource | _ShardSource,
        image_size: int,
        bad_images: str,
        augment: bool,
        trivial: bool,
    ):
        super().__init__((len(source), image_size, image_size, 3))
        self.source, self.image_size, self.bad_images = source, image_size, bad_images
        self.augment, self.trivial = augment, trivial

    def _view(self, row: int, draw=()) -> np.ndarray:
        rng = view_rng(draw, row) if draw and self.augment else None
        try:
            return decode_view(self.source.read(row), self.image_size, rng, self.trivial)
        except folder._damaged_file_errors() as error:
            raise UnreadableImageError(
                f"cannot decode image {printable(self.source.name(row))}: {printable(error)}"
            ) from error

    def _read(self, rows):
        return np.stack([self._view(r) for r in rows])

    def gather(self, rows: np.ndarray, draw: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        if self.bad_images == "raise":
            return np.stack([self._view(r, draw) for r in rows]), np.ones(len(rows), bool)
        return folder.gather_skipping(lambda row: self._view(row, draw), rows, self.shape[1:])

    def _select(self, rows):
        return EncodedImages(
            self.source.select(rows), self.image_size, self.bad_images, self.augment, self.trivial
        )


def read_shard_index(directory: Path) -> dict:
    """The shard index `convert_to_shards.py` wrote in `directory`: class names, and each split's shard files
    and labels. Raises a ValueError naming the file when it is not one."""
    path = directory / SHARD_INDEX
    try:
        index = json.loads(path.read_text())
        valid = index["format"] == SHARD_FORMAT and all(
            isinstance(index["splits"][s]["shards"], list) and isinstance(index["splits"][s]["labels"], list)
            for s in index["splits"]
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{printable(path)} is not a readable shard index ({error})") from error
    if not valid:
        raise ValueError(f"{printable(path)} is not a shard index of format {SHARD_FORMAT}")
    return index


def _split_source(directory: Path, split: str, holdout: float, bad_images: str):
    """`(source, labels, class_names)` of a split: of the shards when `directory` holds `SHARD_INDEX`, else of
    the image folder (its unreadable files left out by `bad_images`, as `data.folder` does)."""
    if (directory / SHARD_INDEX).is_file():
        index = read_shard_index(directory)
        if split not in index["splits"]:
            raise ValueError(f"the shards in {printable(directory)} have no {split} split")
        entry = index["splits"][split]
        shards = [str(directory / name) for name in entry["shards"]]
        labels = np.asarray(entry["labels"], np.int32)
        return _ShardSource(shards, np.arange(len(labels))), labels, tuple(index["class_names"])
    if any(directory.glob("*.array_record")):
        raise ValueError(
            f"{printable(directory)} holds ArrayRecord shards but no {SHARD_INDEX}: their conversion did not "
            "finish (experiments/convert_to_shards.py writes the index last); run it again"
        )
    paths, labels, class_names = folder.folder_files(directory, split, holdout)
    files, labels = folder._scan(paths, labels, "RGB", 1, bad_images)  # 1: any size (headers only)
    return _FileSource(files.paths), labels, class_names


def _train_files(directory: Path, holdout: float) -> int:
    """How many files the training split lists (before any is read): a change renews cached statistics."""
    if (directory / SHARD_INDEX).is_file():
        return len(read_shard_index(directory)["splits"].get("train", {"labels": []})["labels"])
    return len(folder.folder_files(directory, "train", holdout)[0])


def load_imagenet(
    directory: str | os.PathLike,
    split: str = "train",
    *,
    image_size: int,
    holdout: float = 0.0,
    bad_images: str = "skip",
    trivial_augment: bool = False,
) -> ArrayDataset:
    """Split `split` of the encoded images in `directory` (an image folder or shards), viewed at `image_size`.

    Args:
      directory: an image folder (`data.folder`'s layouts) or a folder holding `SHARD_INDEX` and its shards.
      image_size: the side of every view, > 0 (224 for ImageNet).
      holdout: for a folder of class folders without train/ and test/: the fraction held out as test.
      bad_images: "skip" or "raise", as for image folders.
      trivial_augment: training views go through one TrivialAugment operation each.

    Returns:
      An `ArrayDataset` named "imagenet" whose `images` are `EncodedImages`, uint8 `(N, image_size,
      image_size, 3)`, random views for the training split's batches.

    Raises:
      ValueError: a bad argument, or a problem with the folder or shards (named).
    """
    choice(split, "split", SPLITS)
    integer(image_size, "image_size", minimum=1)
    check_image_size(image_size)
    number(holdout, "holdout", minimum=0.0, below=1.0)
    choice(bad_images, "bad_images", BAD_IMAGES)
    boolean(trivial_augment, "trivial_augment")
    directory = Path(directory).expanduser().resolve()
    if not directory.is_dir():
        raise ValueError(f"image folder or shards {printable(directory)} do not exist")
    source, labels, class_names = _split_source(directory, split, holdout, bad_images)
    images = EncodedImages(source, image_size, bad_images, split == "train", trivial_augment)

    def statistics_sample():
        train = (
            images
            if split == "train"
            else EncodedImages(
                _split_source(directory, "train", holdout, bad_images)[0], image_size, bad_images, True, False
            )
        )
        rows = np.sort(np.random.default_rng(0).permutation(len(train))[:STATISTICS_SAMPLE])
        return train._select(rows)

    key = {"dataset": "imagenet", "image_size": image_size, "holdout": holdout, "sample": STATISTICS_SAMPLE,
           "mode": "RGB", "train_files": _train_files(directory, holdout)}  # fmt: skip
    mean, std = folder._statistics(directory, key, statistics_sample)
    return ArrayDataset("imagenet", split, images, labels, class_names, mean, std, source=str(directory))


@register("imagenet")
def _load_imagenet_dataset(split: str, *, data_dir=None, source: str = "auto", **options) -> ArrayDataset:
    """`config.dataset="imagenet"`: the folder or shards `config.data.dir` (`source` is TFDS's, unused)."""
    if not data_dir:
        raise ValueError(
            'dataset "imagenet" reads the folder or shards config.data.dir (data_dir), which is empty'
        )
    if not options.get("image_size"):
        raise ValueError(
            'dataset "imagenet" needs config.data.image_size > 0 (the side of its views, e.g. 224)'
        )
    return load_imagenet(data_dir, split, **options)
