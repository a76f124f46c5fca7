"""Images per second per core: jaxcnn's JPEG views (decode at the DCT scale the crop allows, crop, flip)
against plain Pillow (decode the whole image, then resize and crop as torchvision does) of the same files.

    python experiments/decode_benchmark.py --images 64 --seconds 5 --rounds 5
    python experiments/decode_benchmark.py --dir /data/imagenet/train --view eval

Without `--dir` it writes `--images` ImageNet-typical JPEGs (`make_jpegs.py`: about 500x375, quality 90) to a
temporary folder. The files are read into memory first (no disk in the figures). Each of `--rounds`
rounds times both methods, in alternating order, for a share of `--seconds` (the whole run's timed length),
in this one process on one core; a method's figure is its images per CPU second (`time.process_time`, so
another process on the machine slows its wall time, not its figure), the median over rounds, and the ratio
is the median of the rounds' ratios.
- `--view train`: a random-resized crop (`data.imagenet.random_resized_box`) and a flip with probability 1/2,
  the same draws for both methods;
- `--view eval`: jaxcnn resizes the center square (`data.imagenet.center_box`, 0.875 of the shorter side);
  plain Pillow resizes the whole image to a shorter side of 256 (for 224), then crops its center.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from jaxcnn.data import imagenet

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_jpegs  # noqa: E402


def plain_view(data: bytes, image_size: int, rng: np.random.Generator | None) -> np.ndarray:
    """The reference, as torchvision's transforms on Pillow do it: the whole image decoded; for training, the
    same box as `decode_view` cropped and resized, and the same flip; for evaluation, the whole image resized
    to a shorter side of `image_size / CROP_FRACTION`, then its center cropped."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        width, height = image.size
        if rng is None:
            scale = round(image_size / imagenet.CROP_FRACTION) / min(width, height)
            image = image.resize((round(width * scale), round(height * scale)), Image.Resampling.BILINEAR)
            left, top = (image.width - image_size) // 2, (image.height - image_size) // 2
            return np.asarray(image.crop((left, top, left + image_size, top + image_size)))
        left, top, box_w, box_h = imagenet.random_resized_box(rng, width, height)
        view = image.crop((left, top, left + box_w, top + box_h)).resize(
            (image_size, image_size), Image.Resampling.BILINEAR
        )
    if rng.integers(2):
        view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(view)


def images_per_cpu_second(view, files: list[bytes], image_size: int, train: bool, seconds: float) -> float:
    """How many of `files` (cycled) `view(data, image_size, rng)` makes per second of this process's CPU."""
    count, start, wall = 0, time.process_time(), time.perf_counter()
    while time.perf_counter() - wall < seconds:
        view(files[count % len(files)], image_size, np.random.default_rng(count) if train else None)
        count += 1
    return count / (time.process_time() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dir", default="", help="a folder of JPEGs (searched recursively); default: generated"
    )
    parser.add_argument("--images", type=int, default=64, help="JPEGs generated without --dir")
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--view", choices=("train", "eval"), default="train")
    parser.add_argument("--seconds", type=float, default=5.0, help="the whole timed run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        directory = Path(args.dir or temporary)
        if not args.dir:
            make_jpegs.write_jpegs(directory, classes=1, per_class=args.images, test_per_class=0)
        files = [
            p.read_bytes() for p in sorted(directory.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg")
        ]
    if not files:
        raise SystemExit(f"no JPEGs in {directory}")
    train = args.view == "train"
    methods = {"jaxcnn": imagenet.decode_view, "plain Pillow": plain_view}
    figures = {name: [] for name in methods}
    for round_index in range(args.rounds):
        order = list(methods) if round_index % 2 == 0 else list(methods)[::-1]
        for name in order:
            figures[name].append(
                images_per_cpu_second(
                    methods[name], files, args.image_size, train, args.seconds / (2 * args.rounds)
                )
            )
    ratios = [a / b for a, b in zip(figures["jaxcnn"], figures["plain Pillow"], strict=True)]
    print(
        f"{len(files)} JPEGs, {args.view} views at {args.image_size}x{args.image_size}, {args.rounds} rounds"
    )
    for name, values in figures.items():
        print(f"  {name:13s} {statistics.median(values):7.1f} images/s per core")
    print(
        f"  ratio         {statistics.median(ratios):7.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


if __name__ == "__main__":
    main()
