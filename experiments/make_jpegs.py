"""Writes an image folder of ImageNet-typical JPEGs (about 500x375, quality 90) from photos that ship offline.

    python experiments/make_jpegs.py /tmp/jpegs --classes 4 --per_class 50 --test_per_class 10

The photos are scikit-learn's two sample images (`china.jpg`, `flower.jpg`, 640x427): each JPEG is a random
crop of one of them (class k uses photo k mod 2, tinted by its own color so classes differ), resized to a
size near ImageNet's typical 500x375 (width and height each within 20%, either orientation), possibly
flipped, saved at `--quality`. Written as `DIR/train/class_<k>/<i>.jpg` and `DIR/test/class_<k>/<i>.jpg`,
the layout `config.dataset="imagenet"` (and `"folder"`) reads; the same arguments write the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TYPICAL_SIZE = (500, 375)  # ImageNet's most common (width, height)


def sample_photos() -> list[np.ndarray]:
    """scikit-learn's sample photos, uint8 `(427, 640, 3)` each (shipped with the package)."""
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def make_jpeg(rng: np.random.Generator, photo: np.ndarray, tint: np.ndarray, size_jitter: float = 0.2):
    """One Pillow RGB image: a random crop of `photo`, multiplied by `tint` (3 factors), resized near
    `TYPICAL_SIZE` (either orientation), flipped with probability 1/2."""
    from PIL import Image

    height, width, _ = photo.shape
    crop_h, crop_w = rng.integers(height // 2, height + 1), rng.integers(width // 2, width + 1)
    top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
    pixels = photo[top : top + crop_h, left : left + crop_w] * tint
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    size = np.round(np.asarray(TYPICAL_SIZE) * rng.uniform(1 - size_jitter, 1 + size_jitter, 2)).astype(int)
    image = image.resize(tuple(size if rng.integers(4) else size[::-1]), Image.Resampling.BILINEAR)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.integers(2) else image


def write_jpegs(directory: str | Path, classes: int, per_class: int, test_per_class: int, *,
                quality: int = 90, seed: int = 0, size=None) -> int:  # fmt: skip
    """Writes the folder (see the module's docstring); `size` (width, height) fixes every image's size
    instead of drawing it near `TYPICAL_SIZE`. Returns how many files."""
    directory, photos, written = Path(directory), sample_photos(), 0
    for label in range(classes):
        tint = np.random.default_rng([seed, label]).uniform(0.6, 1.2, 3)
        for split, count in (("train", per_class), ("test", test_per_class)):
            folder = directory / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng([seed, label, split == "test"])
            for index in range(count):
                image = make_jpeg(rng, photos[label % len(photos)], tint)
                if size is not None:
                    image = image.resize(tuple(size))
                image.save(folder / f"{index:05d}.jpg", quality=quality)
                written += 1
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--per_class", type=int, default=50)
    parser.add_argument("--test_per_class", type=int, default=10)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    count = write_jpegs(args.directory, args.classes, args.per_class, args.test_per_class,
                        quality=args.quality, seed=args.seed)  # fmt: skip
    print(f"wrote {count} JPEGs to {args.directory}")


if __name__ == "__main__":
    main()
