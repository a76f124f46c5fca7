"""Your own images: a folder with one subfolder of images per class, read with Pillow (and libspng).

    photos/train/cat/001.jpg   photos/train/dog/001.png   ...     (train/ and test/ subfolders)
    photos/test/cat/101.jpg    photos/test/dog/101.png    ...
or  photos/cat/001.jpg         photos/dog/001.png         ...     (a held-out fraction is the test split)

    train = jaxcnn.data.load_folder("photos", "train", image_size=64)   # ArrayDataset (N, 64, 64, C)
    train.images[[0, 5]]                                                 # two images, decoded: uint8

Images are decoded when batches gather them (in Grain's worker processes with `data.workers`), so a
folder larger than memory trains; only the files' headers are read when it is loaded. 8-bit grayscale and
RGB PNGs that need no conversion or resizing are decoded by libspng (`pyspng`, installed with jaxcnn where
it has wheels) in ~60% of Pillow's time, to the same pixels; every other image by Pillow.

Images are converted to 8 bits a channel, then to grayscale or RGB: 16-bit samples (PNG's 16-bit
grayscale, RGB and RGBA) are scaled, `round(value * 255 / 65535)`, not clipped (16-bit gray with alpha,
which Pillow reads as RGBA, keeps Pillow's high byte of each sample, within 1 of that); an alpha channel or
a palette's transparency is dropped (the color under it is kept); CMYK JPEGs are converted by Pillow.

Class names are the subfolder names, in sorted order (label k is the k-th). The channel statistics of the
training split are computed once and cached beside the data, in `jaxcnn_statistics.json` (an entry that is
not valid statistics is computed again; a constant channel, std 0, is divided by 1, with a warning). Every
problem with the folder itself (an empty class folder, a missing split, images of mixed sizes without
`image_size`, an `image_size` beyond Pillow's decompression limit) is a ValueError naming the path, raised
while loading, before training starts. Names of files and folders reach logs and messages with characters
that are not printable escaped (`printable`).

Damaged images, by `bad_images`: "skip" leaves them out, named and counted in the log; "raise" raises
`UnreadableImageError` naming the file. Each file is checked where it is cheap to:
- while loading, every file's header is read and a PNG's chunk checksums are verified, and an image over
  Pillow's decompression limit (`PIL.Image.MAX_IMAGE_PIXELS` pixels, a "decompression bomb") is refused:
  such files are left out of the split;
- the statistics pass (the first load of a folder) decodes every training image: one that does not decode
  (a PNG with valid checksums around a corrupt zlib stream) is left out of the statistics;
- a batch meeting an image that does not decode (in a Grain worker or not) keeps its shape: the image's
  place holds a copy of the batch's first readable example, with mask 0, so it counts in no loss, gradient
  or metric (`data.batch_of`). The file stays a row of the split, so the batches and their order are those
  of a run where it decodes, whether the statistics came from the cache or not, and a resumed run stays
  bit-identical. Decoding every image at every load instead would cost an epoch of decoding, in one process,
  before each run and each resume.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxcnn._files import strict_json, write_atomically
from jaxcnn._validate import choice, is_number, number
from jaxcnn.data.datasets import (
    BAD_IMAGES,
    COLORS,
    SPLITS,
    ArrayDataset,
    LazyImages,
    UnreadableImageError,
    check_image_size,
    printable,
    register,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STATISTICS_FILE = "jaxcnn_statistics.json"
_HOLDOUT_SEED = 0  # the held-out test split is fixed by the folder, not by the run's seed
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_MODES = {0: "L", 2: "RGB"}  # IHDR color types libspng decodes to exactly Pillow's pixels
# Pillow decodes a 16-bit color PNG's samples to their high bytes (raw mode "RGB;16B"); the raw mode that
# reads them as little-endian, the same bytes a pixel (so the same unfiltering), gives their low bytes.
_LOW_BYTES_RAW_MODES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L"}
_STATISTICS_READ_BYTES = 1 << 26  # decoded images the statistics pass holds at once (64 MiB)


@functools.cache
def _damaged_file_errors() -> tuple[type[BaseException], ...]:
    """What Pillow raises for a file it cannot read or decode, or will not decode (a decompression bomb)."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning


def _class_folders(directory: Path) -> list[Path]:
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{printable(directory)} has no class folders (one subfolder of images per class)")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"class folder {printable(folder)} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def folder_files(
    directory: str | os.PathLike, split: str, holdout: float = 0.0
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    """`(files, labels, class_names)` of split `split` of an image folder, before any image is read.

    With `train/` and `test/` subfolders, each split is its own folder (`holdout` must be 0); without
    them, the class folders sit in `directory` and a fraction `holdout` of each class, drawn with a fixed
    seed, is the test split.
    """
    directory = Path(directory)
    choice(split, "split", SPLITS)
    number(holdout, "holdout", minimum=0.0, below=1.0)
    if not directory.is_dir():
        raise ValueError(f"image folder {printable(directory)} does not exist")
    split_folders = [directory / s for s in SPLITS]
    if any(folder.is_dir() for folder in split_folders):
        if holdout:
            raise ValueError(
                f"{printable(directory)} has train/ and test/ subfolders: holdout must be 0, got {holdout}"
            )
        for folder in split_folders:
            if not folder.is_dir():
                raise ValueError(
                    f"{printable(directory)} has no {folder.name}/ subfolder (it needs train/ and test/)"
                )
        class_names = [p.name for p in _class_folders(directory / "train")]
        folders = _class_folders(directory / split)
        extra = sorted({p.name for p in folders} - set(class_names))
        if extra:
            raise ValueError(
                f"{printable(directory / split)} has classes {extra} that "
                f"{printable(directory / 'train')} lacks"
            )
        files = [(f, class_names.index(folder.name)) for folder in folders for f in _image_files(folder)]
    else:
        if not holdout:
            raise ValueError(
                f"{printable(directory)} has no train/ and test/ subfolders: give a held-out fraction "
                "(holdout, config.data.holdout) to split its class folders"
            )
        folders = _class_folders(directory)
        class_names = [p.name for p in folders]
        files = []
        for label, folder in enumerate(folders):
            in_class = _image_files(folder)
            order = np.random.default_rng([_HOLDOUT_SEED, label]).permutation(len(in_class))
            held = max(1, round(holdout * len(in_class)))
            if held >= len(in_class):
                raise ValueError(
                    f"class folder {printable(folder)} has too few images ({len(in_class)}) to hold out some"
                )
            chosen = order[:held] if split == "test" else order[held:]
            files += [(in_class[i], label) for i in sorted(chosen)]
    paths = [f for f, _ in files]
    return paths, np.asarray([label for _, label in files], np.int32), tuple(class_names)


@functools.cache
def _libspng():
    """The `pyspng` module, or None where it is not installed (it has no wheel for macOS on Intel)."""
    try:
        import pyspng
    except ImportError:
        return None
    return pyspng


def _png_layout(data: bytes) -> tuple[int, int, str] | None:
    """`(height, width, mode)` of an 8-bit grayscale ("L") or RGB PNG, from its header (IHDR comes first);
    None for any other file: palette, alpha, 16-bit or fewer bits, not a PNG."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height, depth, color_type = struct.unpack(">IIBB", data[16:26])
    mode = _PNG_COLOR_MODES.get(color_type) if depth == 8 else None
    return (height, width, mode) if mode else None


def _decode_with_libspng(data: bytes, mode: str, image_size: int) -> np.ndarray | None:
    """`data` decoded by libspng when that gives the pixels Pillow would (an 8-bit PNG already in `mode` and
    at `image_size`); None otherwise, and where pyspng is missing or rejects the file."""
    layout, spng = _png_layout(data), _libspng()
    if spng is None or layout is None or layout[2] != mode:
        return None
    if image_size and layout[:2] != (image_size, image_size):
        return None
    try:
        array = spng.load(data)  # in the file's own format, which is `mode` (asking for it converts, slower)
    except RuntimeError:  # Pillow decodes it, or names what is wrong with it
        return None
    expected = layout[:2] if mode == "L" else (*layout[:2], 3)
    return array if array.shape == expected and array.dtype == np.uint8 else None


def _scaled_from_sixteen_bits(samples: np.ndarray) -> np.ndarray:
    """uint8 `round(samples * 255 / 65535)` of integer samples in [0, 65535]: `(2 v + 257) // 514`, as
    65535 = 255 * 257 (never a tie)."""
    return ((samples.astype(np.uint32) * 2 + 257) // 514).astype(np.uint8)


def _eight_bit(image, data: bytes):
    """`image` (opened by Pillow from `data`, not loaded yet) with 8-bit samples: 16-bit ones scaled by
    255 / 65535 and rounded, where Pillow's conversions clip 16-bit grayscale at 255 and keep only a color
    sample's high byte. Other images are returned as they are."""
    from PIL import Image

    if image.mode.startswith("I"):  # 16-bit grayscale ("I;16", "I;16B", ...), or 32-bit integers ("I")
        return Image.fromarray(_scaled_from_sixteen_bits(np.clip(np.asarray(image), 0, 65535)))
    tile = image.tile[0] if len(image.tile) == 1 else None
    low_bytes = tile and isinstance(tile.args, str) and _LOW_BYTES_RAW_MODES.get(tile.args)
    if tile is None or not low_bytes:
        return image
    with Image.open(io.BytesIO(data)) as low:
        low.tile = [tile._replace(args=low_bytes)]
        samples = np.asarray(image).astype(np.uint16) << 8 | np.asarray(low)
    return Image.fromarray(_scaled_from_sixteen_bits(samples))


def _decode(path: Path, mode: str, image_size: int) -> np.ndarray:
    """One image file as uint8 `(H, W, C)`: converted to 8 bits, to `mode` ("L" or "RGB"), resized to a
    square. Pillow's errors for a damaged file (`_damaged_file_errors`) pass through."""
    with open(path, "rb", buffering=0) as file:  # unbuffered: one read of the whole file
        data = file.read()
    array = _decode_with_libspng(data, mode, image_size)
    if array is None:
        from PIL import Image  # imported here: only image folders need it

        with Image.open(io.BytesIO(data)) as image:
            image = _eight_bit(image, data)
            if image.mode != mode:
                image = image.convert(mode)
            if image_size and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _color_mode(files: list[Path], color: str) -> str:
    """The Pillow mode all images are converted to; "auto" follows the first training image that opens
    (the scan names those that do not)."""
    if color != "auto":
        return "L" if color == "grayscale" else "RGB"
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as image:
                return "L" if image.mode in _GRAYSCALE_MODES else "RGB"
        except _damaged_file_errors():
            continue
    return "RGB"


def gather_skipping(
    read: Callable[[int], np.ndarray], rows: np.ndarray, shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """`LazyImages.gather`'s `(images, readable)` of `read(row)` for each of `rows` (uint8 `shape` each),
    where an image whose `read` raises `UnreadableImageError` is zeros, not readable, and named in the log."""
    images, readable = np.zeros((len(rows), *shape), np.uint8), np.ones(len(rows), bool)
    for i, row in enumerate(rows):
        try:
            images[i] = read(row)
        except UnreadableImageError as error:
            readable[i] = False
            logging.warning("%s: skipped (bad_images is 'skip')", error)
    return images, readable


class ImageFiles(LazyImages):
    """The images of a folder split, decoded from their files when indexed (see `LazyImages`). An image
    that does not decode is an `UnreadableImageError` naming its file; `gather` skips it (zeros, not
    readable, and a warning naming it) where `bad_images` is "skip"."""

    def __init__(
        self, paths: list[Path], mode: str, shape: tuple[int, int, int], image_size: int, bad_images: str
    ):
        super().__init__((len(paths), *shape))
        self.paths, self.mode, self.image_size, self.bad_images = list(paths), mode, image_size, bad_images

    def _image(self, row: int) -> np.ndarray:
        path = self.paths[row]
        try:
            image = _decode(path, self.mode, self.image_size)
        except _damaged_file_errors() as error:
            raise UnreadableImageError(
                f"cannot decode image {printable(path)}: {printable(error)}"
            ) from error
        if image.shape != self.shape[1:]:  # replaced since the folder was loaded
            raise UnreadableImageError(
                f"image {printable(path)} decodes to {image.shape}, not to {self.shape[1:]} as when its "
                "folder was loaded"
            )
        return image

    def _read(self, rows):
        return np.stack([self._image(r) for r in rows])

    def gather(self, rows: np.ndarray, draw: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
        if self.bad_images == "raise":
            return super().gather(rows)
        return gather_skipping(self._image, rows, self.shape[1:])

    def _select(self, rows):
        return ImageFiles(
            [self.paths[r] for r in rows], self.mode, self.shape[1:], self.image_size, self.bad_images
        )


def _image_size_of(path: Path, mode: str, image_size: int) -> tuple[int, int, int]:
    """`(H, W, C)` of an image once decoded, from its header; one of `_damaged_file_errors` if it is
    unreadable (Pillow's `verify` checks a PNG's chunk checksums without decoding it) or over Pillow's
    decompression limit (beyond which Pillow only warns up to twice the limit)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            width, height = image.size
            image.verify()
    height, width = (image_size, image_size) if image_size else (height, width)
    return height, width, 1 if mode == "L" else 3


def _scan(paths: list[Path], labels: np.ndarray, mode: str, image_size: int, bad_images: str):
    """The readable images of `paths` (`ImageFiles`) and their labels: unreadable ones are skipped, each
    named in the log, or an `UnreadableImageError` names the first when `bad_images` is "raise"; images of
    another size than the first, without `image_size`, are a ValueError naming both."""
    shapes: list[tuple[int, int, int]] = []
    kept: list[int] = []  # the indices of `paths` kept
    skipped = 0
    for index, path in enumerate(paths):
        try:
            shape = _image_size_of(path, mode, image_size)
        except _damaged_file_errors() as error:
            message = f"cannot read image {printable(path)}: {printable(error)}"
            if bad_images == "raise":
                raise UnreadableImageError(message) from error
            logging.warning("%s: skipped (bad_images is 'skip')", message)
            skipped += 1
            continue
        if shapes and shape != shapes[0]:
            raise ValueError(
                f"image {printable(path)} is {shape[1]}x{shape[0]}, {printable(paths[kept[0]])} is "
                f"{shapes[0][1]}x{shapes[0][0]}: set image_size (config.data.image_size) to resize them all"
            )
        shapes.append(shape)
        kept.append(index)
    if skipped:
        logging.warning("skipped %d unreadable image(s) of %d (named above)", skipped, len(paths))
    if not kept:
        raise ValueError(f"none of the {len(paths)} images could be read, e.g. {printable(paths[0])}")
    return ImageFiles([paths[i] for i in kept], mode, shapes[0], image_size, bad_images), labels[kept]


def _channel_statistics(images: LazyImages) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on the [0, 1] scale of the `images` that decode (those `gather` skips are
    counted in the log), read a few at a time. Exact: from each channel's histogram of its 256 values."""
    channels, per_read = images.shape[-1], max(1, _STATISTICS_READ_BYTES // math.prod(images.shape[1:]))
    histograms, skipped = np.zeros((channels, 256), np.int64), 0
    for start in range(0, len(images), per_read):
        pixels, readable = images.gather(np.arange(start, min(start + per_read, len(images))))
        skipped += int(np.sum(~readable))
        for channel in range(channels):
            histograms[channel] += np.bincount(pixels[readable][..., channel].ravel(), minlength=256)
    if skipped:
        logging.warning(
            "%d of the %d training images do not decode (named above): left out of the channel statistics, "
            "masked out of the batches they fall in",
            skipped,
            len(images),
        )
    count = int(histograms[0].sum())
    if not count:
        raise ValueError(f"none of the {len(images)} training images decodes")
    values = np.arange(256, dtype=np.int64)
    sums, squares = (histograms @ values).tolist(), (histograms @ values**2).tolist()  # Python ints: exact
    mean = tuple(total / (255 * count) for total in sums)
    variance = ((count * q - s * s) / (255 * count) ** 2 for s, q in zip(sums, squares, strict=True))
    return mean, tuple(math.sqrt(v) for v in variance)


def _valid_statistics(entry: dict, channels: int) -> bool:
    """Whether a cache entry holds `channels` means in [0, 1] and stds in [0, 0.5] (the most a [0, 1]
    value's std can be)."""
    mean, std = entry.get("mean"), entry.get("std")
    if not (isinstance(mean, list) and isinstance(std, list)):
        return False
    if not all(len(v) == channels and all(map(is_number, v)) for v in (mean, std)):
        return False
    return all(0 <= m <= 1 for m in mean) and all(0 <= s <= 0.5 for s in std)  # False for NaN


def _statistics(directory: Path, key: dict, train_images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training split on the [0, 1] scale, cached in `STATISTICS_FILE`
    beside the data for these settings (`key`); computed (from `train_images()`) when absent, stale or
    damaged. A std of 0 (a constant channel) is returned as 1, with a warning: it divides."""
    cache = directory / STATISTICS_FILE
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        entries = []
    entries = [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []
    cached = next((e for e in entries if e.get("key") == key), None)
    channels = 1 if key["mode"] == "L" else 3
    if cached is not None and not _valid_statistics(cached, channels):
        logging.warning(
            "the channel statistics cached in %s are damaged (mean %s, std %s): computing them again",
            printable(cache),
            cached.get("mean"),
            cached.get("std"),
        )
        cached = None
    if cached is None:
        mean, std = _channel_statistics(train_images())
        entries = [e for e in entries if e.get("key") != key] + [{"key": key, "mean": mean, "std": std}]
        try:
            write_atomically(cache, strict_json(entries, indent=1) + "\n", durable=False)
        except OSError as error:  # a read-only folder: computed again next time
            logging.warning("could not cache channel statistics in %s (%s)", printable(cache), error)
    else:
        mean, std = tuple(cached["mean"]), tuple(cached["std"])
    for channel in np.flatnonzero(np.asarray(std) == 0):
        logging.warning(
            "channel %d of the training images in %s is constant (std 0): normalized with std 1 instead "
            "(if it is not constant, %s is damaged: delete it to compute the statistics again)",
            channel,
            printable(directory),
            printable(cache),
        )
    return mean, tuple(s or 1.0 for s in std)


def load_folder(
    directory: str | os.PathLike,
    split: str = "train",
    *,
    image_size: int = 0,
    color: str = "auto",
    holdout: float = 0.0,
    bad_images: str = "skip",
) -> ArrayDataset:
    """Split `split` of the image folder `directory`, its images decoded as batches are gathered.

    Args:
      directory: the folder: `train/` and `test/` of class folders, or class folders and `holdout`.
      image_size: > 0: every image is resized to `image_size` x `image_size` (bilinear); 0: all images must
        already have one size. At most Pillow's decompression limit in pixels (`check_image_size`).
      color: "grayscale" (1 channel), "rgb" (3), or "auto": grayscale when the first training image is.
      holdout: without train/ and test/: the fraction of each class held out as the test split.
      bad_images: an image that cannot be read or decoded is "skip"ped (named and counted in the log;
        left out of the split, the statistics or its batches: see this module's docstring), or "raise"s
        an `UnreadableImageError`.

    Returns:
      An `ArrayDataset` named "folder" whose `images` are `ImageFiles` (uint8 `(N, H, W, C)`, decoded
      when indexed), with the training split's statistics. Every file's header is read (and a PNG's
      checksums verified) here, so a damaged file is found before training.

    Raises:
      ValueError: a problem with the folder or an argument (named); `UnreadableImageError` (a ValueError)
        for a damaged image when `bad_images` is "raise".
    """
    check_image_size(image_size)
    choice(color, "color", COLORS)
    choice(bad_images, "bad_images", BAD_IMAGES)
    directory = Path(directory).expanduser().resolve()
    train_files, train_labels, class_names = folder_files(directory, "train", holdout)
    mode = _color_mode(train_files, color)

    def scan(split_name: str):
        paths, labels, _ = (
            (train_files, train_labels, class_names)
            if split_name == "train"
            else folder_files(directory, split_name, holdout)
        )
        return _scan(paths, labels, mode, image_size, bad_images)

    images, labels = scan(split)
    if split == "train":
        logging.info(
            "image folder %s: %d classes: %s",
            printable(directory),
            len(class_names),
            ", ".join(map(printable, class_names)),
        )
    key = {"image_size": image_size, "mode": mode, "holdout": holdout, "train_files": len(train_files)}
    mean, std = _statistics(directory, key, lambda: images if split == "train" else scan("train")[0])
    return ArrayDataset("folder", split, images, labels, class_names, mean, std, source=str(directory))


@register("folder")
def _load_folder_dataset(split: str, *, data_dir=None, source: str = "auto", **options) -> ArrayDataset:
    """`config.dataset="folder"`: the image folder `config.data.dir` (`source` is TFDS's, unused)."""
    if not data_dir:
        raise ValueError('dataset "folder" reads the image folder config.data.dir (data_dir), which is empty')
    return load_folder(data_dir, split, **options)
