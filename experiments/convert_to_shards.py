"""Converts an image folder (JPEG, PNG) to ArrayRecord shards of its encoded files (`dataset="imagenet"`).

    python experiments/convert_to_shards.py /data/imagenet /data/imagenet_shards --per_shard 1024
    python experiments/train.py --config experiments/configs/imagenet_resnet50.py --workdir runs/r50 \
        --config.data.dir=/data/imagenet_shards

The folder is read as `data.folder` reads one (`train/` and `test/` of class folders, or class folders and
`--holdout`); every file's header is read first, and an unreadable one is left out and named
(`--bad_images skip`) or stops the conversion (`raise`). The files' bytes are stored as they are (no
re-encoding), one record each (`data.imagenet.encode_record`: label, file name, bytes), in the order of the
folder, `--per_shard` to a shard: `DIR/<split>-<k>-of-<n>.array_record`. The index `jaxcnn_shards.json`
(class names, each split's shards and labels) is written last, atomically: a conversion that stopped half-way
leaves no index, and the loader refuses the folder until it is run again.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from jaxcnn._files import strict_json, write_atomically
from jaxcnn._validate import integer
from jaxcnn.data import folder, imagenet
from jaxcnn.data.datasets import SPLITS


def _write_split(
    paths: list[Path], labels: np.ndarray, output: Path, split: str, per_shard: int
) -> list[str]:
    """`paths` as the records of shards `output/<split>-<k>-of-<n>.array_record`; the shards' names."""
    from array_record.python.array_record_module import ArrayRecordWriter

    count = -(-len(paths) // per_shard)
    names = [f"{split}-{k:05d}-of-{count:05d}.array_record" for k in range(count)]
    for k, name in enumerate(names):
        writer = ArrayRecordWriter(str(output / name), "group_size:1")  # one record a chunk: random access
        try:
            for row in range(k * per_shard, min((k + 1) * per_shard, len(paths))):
                relative = f"{paths[row].parent.name}/{paths[row].name}"
                writer.write(imagenet.encode_record(int(labels[row]), relative, paths[row].read_bytes()))
        finally:
            writer.close()
    return names


def convert_to_shards(
    directory, output, *, per_shard: int = 1024, holdout: float = 0.0, bad_images: str = "skip"
) -> dict:
    """Writes the shards of both splits of the image folder `directory` to `output` (made if missing) and
    their index (`data.imagenet.SHARD_INDEX`), last. Returns the index.

    Raises:
      ValueError: a bad argument or folder (as `data.load_folder`); `UnreadableImageError` for an
        unreadable file under `bad_images="raise"`.
    """
    integer(per_shard, "per_shard", minimum=1)
    directory, output = Path(directory).expanduser().resolve(), Path(output).expanduser()
    output.mkdir(parents=True, exist_ok=True)
    index = {"format": imagenet.SHARD_FORMAT, "class_names": None, "splits": {}}
    for split in SPLITS:
        paths, labels, class_names = folder.folder_files(directory, split, holdout)
        readable, labels = folder._scan(paths, labels, "RGB", 1, bad_images)  # 1: any size (headers only)
        shards = _write_split(readable.paths, labels, output, split, per_shard)
        index["class_names"] = list(class_names)
        index["splits"][split] = {"shards": shards, "labels": labels.tolist()}
        logging.info("%s: %d images in %d shards", split, len(labels), len(shards))
    write_atomically(output / imagenet.SHARD_INDEX, strict_json(index) + "\n")
    return index


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the image folder")
    parser.add_argument("output", help="where the shards and their index go")
    parser.add_argument("--per_shard", type=int, default=1024, help="images a shard")
    parser.add_argument("--holdout", type=float, default=0.0, help="without train/ and test/: test fraction")
    parser.add_argument("--bad_images", choices=("skip", "raise"), default="skip")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    index = convert_to_shards(args.directory, args.output, per_shard=args.per_shard, holdout=args.holdout,
                              bad_images=args.bad_images)  # fmt: skip
    sizes = {split: len(entry["labels"]) for split, entry in index["splits"].items()}
    print(f"wrote {sizes} images of {len(index['class_names'])} classes to {args.output}")


if __name__ == "__main__":
    main()
