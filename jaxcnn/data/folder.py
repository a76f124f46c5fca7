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

Class names are the subfolder names, in sorted order (label k is the k-th). The channel statistics of the
training split are computed once and cached beside the data, in `jaxcnn_statistics.json`. Every problem
with the folder itself (an empty class folder, a missing split, images of mixed sizes without
`image_size`) is a ValueError naming the path, raised while loading, before training starts.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import struct
from pathlib import Path

import numpy as np

from jaxcnn._validate import choice, integer, number
from jaxcnn.data.datasets import BAD_IMAGES, COLORS, SPLITS, ArrayDataset, LazyImages, register

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
STATISTICS_FILE = "jaxcnn_statistics.json"
_HOLDOUT_SEED = 0  # the held-out test split is fixed by the folder, not by the run's seed
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_MODES = {0: "L", 2: "RGB"}  # IHDR color types libspng decodes to exactly Pillow's pixels


def _class_folders(directory: Path) -> list[Path]:
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ValueError(f"{directory} has no class folders (one subfolder of images per class)")
    return folders


def _image_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"class folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def folder_files(directory: str | os.PathLike, split: str, holdout: float = 0.0):
    """`(files, labels, class_names)` of split `split` of an image folder, before any image is read.

    With `train/` and `test/` subfolders, each split is its own folder (`holdout` must be 0); without
    them, the class folders sit in `directory` and a fraction `holdout` of each class, drawn with a fixed
    seed, is the test split.
    """
    directory = Path(directory)
    choice(split, "split", SPLITS)
    number(holdout, "holdout", minimum=0.0, below=1.0)
    if not directory.is_dir():
        raise ValueError(f"image folder {directory} does not exist")
    split_folders = [directory / s for s in SPLITS]
    if any(folder.is_dir() for folder in split_folders):
        if holdout:
            raise ValueError(f"{directory} has train/ and test/ subfolders: holdout must be 0, got {holdout}")
        for folder in split_folders:
            if not folder.is_dir():
                raise ValueError(f"{directory} has no {folder.name}/ subfolder (it needs train/ and test/)")
        class_names = [p.name for p in _class_folders(directory / "train")]
        folders = _class_folders(directory / split)
        extra = sorted({p.name for p in folders} - set(class_names))
        if extra:
            raise ValueError(f"{directory / split} has classes {extra} that {directory / 'train'} lacks")
        files = [(f, class_names.index(folder.name)) for folder in folders for f in _image_files(folder)]
    else:
        if not holdout:
            raise ValueError(
                f"{directory} has no train/ and test/ subfolders: give a held-out fraction "
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
                    f"class folder {folder} has too few images ({len(in_class)}) to hold out some"
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


def _decode(path: Path, mode: str, image_size: int) -> np.ndarray:
    """One image file as uint8 `(H, W, C)`: converted to `mode` ("L" or "RGB"), resized to a square."""
    with open(path, "rb", buffering=0) as file:  # unbuffered: one read of the whole file
        data = file.read()
    array = _decode_with_libspng(data, mode, image_size)
    if array is None:
        from PIL import Image  # imported here: only image folders need it

        with Image.open(io.BytesIO(data)) as image:
            if image.mode != mode:
                image = image.convert(mode)
            if image_size and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
            array = np.asarray(image, np.uint8)
    return array[..., None] if array.ndim == 2 else array


def _color_mode(first: Path, color: str) -> str:
    """The Pillow mode all images are converted to; "auto" follows the first training image."""
    if color != "auto":
        return "L" if color == "grayscale" else "RGB"
    from PIL import Image

    with Image.open(first) as image:
        return "L" if image.mode in _GRAYSCALE_MODES else "RGB"


class ImageFiles(LazyImages):
    """The images of a folder split, decoded from their files when indexed (see `LazyImages`)."""

    def __init__(self, paths: list[Path], mode: str, shape: tuple[int, int, int], image_size: int):
        super().__init__((len(paths), *shape))
        self.paths, self.mode, self.image_size = list(paths), mode, image_size

    def _read(self, rows):
        return np.stack([_decode(self.paths[r], self.mode, self.image_size) for r in rows])

    def _select(self, rows):
        return ImageFiles([self.paths[r] for r in rows], self.mode, self.shape[1:], self.image_size)


def _image_size_of(path: Path, mode: str, image_size: int) -> tuple[int, int, int]:
    """`(H, W, C)` of an image once decoded, from its header; a ValueError or OSError if it is unreadable
    (Pillow's `verify` checks a PNG's chunk checksums without decoding it)."""
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
        image.verify()
    height, width = (image_size, image_size) if image_size else (height, width)
    return height, width, 1 if mode == "L" else 3


def _scan(paths: list[Path], labels: np.ndarray, mode: str, image_size: int, bad_images: str):
    """The readable images of `paths` (`ImageFiles`) and their labels: unreadable ones are skipped and
    counted in the log, or a ValueError names the first when `bad_images` is "raise"; images of another
    size than the first, without `image_size`, are a ValueError naming both."""
    shapes, kept, skipped = [], [], []
    for index, path in enumerate(paths):
        try:
            shape = _image_size_of(path, mode, image_size)
        except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors of a damaged file
            if bad_images == "raise":
                raise ValueError(f"cannot read image {path}: {error}") from error
            skipped.append(path)
            continue
        if shapes and shape != shapes[0]:
            raise ValueError(
                f"image {path} is {shape[1]}x{shape[0]}, {paths[kept[0]]} is {shapes[0][1]}x{shapes[0][0]}: "
                "set image_size (config.data.image_size) to resize them all"
            )
        shapes.append(shape)
        kept.append(index)
    if skipped:
        logging.warning("skipped %d unreadable image(s) of %d, e.g. %s", len(skipped), len(paths), skipped[0])
    if not kept:
        raise ValueError(f"none of the {len(paths)} images could be read, e.g. {paths[0]}")
    return ImageFiles([paths[i] for i in kept], mode, shapes[0], image_size), labels[kept]


def _statistics(directory: Path, key: dict, train_images) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training split on the [0, 1] scale, cached in `STATISTICS_FILE`
    beside the data for these settings (`key`); computed (from `train_images()`) when absent or stale."""
    cache = directory / STATISTICS_FILE
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        entries = []
    for entry in entries if isinstance(entries, list) else []:
        if entry.get("key") == key:
            return tuple(entry["mean"]), tuple(entry["std"])
    pixels = np.asarray(train_images(), np.float64) / 255
    mean = tuple(float(m) for m in pixels.mean(axis=(0, 1, 2)))
    std = tuple(float(s) for s in pixels.std(axis=(0, 1, 2)))
    try:
        temporary = cache.with_suffix(".tmp")
        temporary.write_text(json.dumps([*entries, {"key": key, "mean": mean, "std": std}], indent=1) + "\n")
        os.replace(temporary, cache)
    except OSError as error:  # a read-only folder: computed again next time
        logging.warning("could not cache channel statistics in %s (%s)", cache, error)
    return mean, std


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
        already have one size.
      color: "grayscale" (1 channel), "rgb" (3), or "auto": grayscale when the first training image is.
      holdout: without train/ and test/: the fraction of each class held out as the test split.
      bad_images: an unreadable image is "skip"ped (and counted in the log), or "raise"s a ValueError.

    Returns:
      An `ArrayDataset` named "folder" whose `images` are `ImageFiles` (uint8 `(N, H, W, C)`, decoded
      when indexed), with the training split's statistics. Every file's header is read (and a PNG's
      checksums verified) here, so a damaged file is found before training.
    """
    integer(image_size, "image_size", minimum=0)
    choice(color, "color", COLORS)
    choice(bad_images, "bad_images", BAD_IMAGES)
    directory = Path(directory).expanduser().resolve()
    train_files, train_labels, class_names = folder_files(directory, "train", holdout)
    mode = _color_mode(train_files[0], color)

    def scan(split_name: str):
        paths, labels, _ = (
            (train_files, train_labels, class_names)
            if split_name == "train"
            else folder_files(directory, split_name, holdout)
        )
        return _scan(paths, labels, mode, image_size, bad_images)

    images, labels = scan(split)
    if split == "train":
        logging.info("image folder %s: %d classes: %s", directory, len(class_names), ", ".join(class_names))
    key = {"image_size": image_size, "mode": mode, "holdout": holdout, "train_files": len(train_files)}
    mean, std = _statistics(directory, key, lambda: images if split == "train" else scan("train")[0])
    return ArrayDataset("folder", split, images, labels, class_names, mean, std, source=str(directory))


@register("folder")
def _load_folder_dataset(split: str, *, data_dir=None, source: str = "auto", **options) -> ArrayDataset:
    """`config.dataset="folder"`: the image folder `config.data.dir` (`source` is TFDS's, unused)."""
    if not data_dir:
        raise ValueError('dataset "folder" reads the image folder config.data.dir (data_dir), which is empty')
    return load_folder(data_dir, split, **options)
