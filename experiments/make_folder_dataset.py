"""Writes a small image-folder dataset (PNGs, one subfolder per class) for `config.dataset="folder"`.

    python experiments/make_folder_dataset.py /tmp/fashion_png --size 64 --per_class 100
    python experiments/train.py --config experiments/configs/lenet5.py --workdir /tmp/runs/folder \
        --config.dataset=folder --config.data.dir=/tmp/fashion_png --config.num_epochs=1

The images are the first examples of each class of `--dataset` (Fashion-MNIST by default; digits
when it is not available here), resized to `--size` and written as `DIR/train/<class>/<index>.png` and
`DIR/test/<class>/<index>.png`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from jaxcnn import data


def source_dataset(name: str, split: str) -> data.ArrayDataset:
    try:
        return data.load(name, split)
    except data.DataUnavailableError:
        logging.warning("%s is not available here: writing scikit-learn's digits instead", name)
        return data.load("digits", split)


def folder_name(class_name: str) -> str:
    """A class name as a folder name ("T-shirt/top" -> "T-shirt_top")."""
    return class_name.replace("/", "_").replace(" ", "_")


def write_split(dataset: data.ArrayDataset, directory: Path, size: int, per_class: int) -> int:
    """The first `per_class` images of each class of `dataset` as PNGs of `size` x `size`; how many."""
    from PIL import Image

    written = 0
    for label, class_name in enumerate(dataset.class_names):
        folder = directory / folder_name(class_name)
        folder.mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(dataset.labels == label)[:per_class]:
            image = Image.fromarray(dataset.images[index].squeeze(-1) if dataset.images.shape[-1] == 1
                                    else dataset.images[index])  # fmt: skip
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            image.save(folder / f"{index:05d}.png")
            written += 1
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--dataset", default="fashion_mnist", help="a name of jaxcnn.data.available()")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--per_class", type=int, default=100, help="training images per class (default 100)")
    parser.add_argument(
        "--test_per_class", type=int, default=0, help="test images per class (default: a fifth)"
    )
    args = parser.parse_args(argv)
    if args.size < 1 or args.per_class < 1 or args.test_per_class < 0:
        parser.error("--size and --per_class must be >= 1, --test_per_class >= 0")
    test_per_class = args.test_per_class or max(1, args.per_class // 5)
    for split, count in (("train", args.per_class), ("test", test_per_class)):
        written = write_split(source_dataset(args.dataset, split), args.directory / split, args.size, count)
        print(f"{args.directory / split}: {written} PNGs of {args.size}x{args.size}")


if __name__ == "__main__":
    main()
