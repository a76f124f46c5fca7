"""Converts an image folder (JPEG, PNG) or a TFDS copy to ArrayRecord shards of encoded images, for
`config.dataset="imagenet"`.

    python experiments/convert_to_shards.py /data/imagenet /data/imagenet_shards --per_shard 1024
    python experiments/convert_to_shards.py ~/tensorflow_datasets /data/imagenet_shards --tfds imagenet2012
    python experiments/train.py --config experiments/configs/imagenet_resnet50.py --workdir runs/r50 \
        --config.data.dir=/data/imagenet_shards

The folder is read as `data.folder` reads one (`train/` and `test/` of class folders, or class folders and
`--holdout`); every file's header is read first, and an unreadable one is left out and named
(`--bad_images skip`) or stops the conversion (`raise`). The files' bytes are stored as they are (no
re-encoding), one record each (`data.imagenet.encode_record`: label, file name, bytes), in the order of the
folder, `--per_shard` to a shard: `DIR/<split>-<k>-of-<n>.array_record`. The index `jaxcnn_shards.json`
(class names, each split's shards and labels) is written last, atomically: a conversion that stopped half-way
leaves no index, and the loader refuses the folder until it is run again.
With `--tfds NAME`, DIRECTORY is TFDS's data directory holding NAME prepared as array_record files (read
without TensorFlow): its images' encoded bytes are copied as they are, its "validation" split (ImageNet's
labelled one) becoming the test split where it has one.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from jaxcnn._files import strict_json, write_atomically
from jaxcnn._validate import integer
from jaxcnn.data import folder, imagenet
from jaxcnn.data.datasets import SPLITS, printable


def _write_split(
    examples, count: int, output: Path, split: str, per_shard: int
) -> tuple[list[str], list[int]]:
    """The `count` `(label, name, encoded image)` of `examples` as the records of shards
    `output/<split>-<k>-of-<n>.array_record`, `per_shard` to a shard; the shards' names and the labels."""
    from array_record.python.array_record_module import ArrayRecordWriter

    examples, labels = iter(examples), []
    names = [
        f"{split}-{k:05d}-of-{-(-count // per_shard):05d}.array_record" for k in range(-(-count // per_shard))
    ]
    for k, name in enumerate(names):
        writer = ArrayRecordWriter(str(output / name), "group_size:1")  # one record a chunk: random access
        try:
            for _ in range(min(per_shard, count - k * per_shard)):
                label, file_name, encoded = next(examples)
                writer.write(imagenet.encode_record(label, file_name, encoded))
                labels.append(label)
        finally:
            writer.close()
    return names, labels


def _folder_split(directory: Path, split: str, holdout: float, bad_images: str):
    """`(examples, count, class_names)` of a folder's split, its unreadable files left out (`bad_images`)."""
    paths, labels, class_names = folder.folder_files(directory, split, holdout)
    readable, labels = folder._scan(paths, labels, "RGB", 1, bad_images)  # 1: any size (headers only)
    examples = (
        (int(label), f"{path.parent.name}/{path.name}", path.read_bytes())
        for path, label in zip(readable.paths, labels, strict=True)
    )
    return examples, len(labels), class_names


_TFDS_READ = 1024  # examples read from a TFDS data source at once


def _tfds_split(builder, split: str):
    """`(examples, count, class_names)` of split `split` ("test": TFDS's "validation" where it has one) of a
    prepared TFDS copy, its images' encoded bytes as stored (not decoded)."""
    import tensorflow_datasets as tfds

    if split == "test" and "validation" in builder.info.splits:
        split = "validation"  # ImageNet's test split has no labels
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})

    def examples():
        for start in range(0, len(source), _TFDS_READ):
            for offset, example in enumerate(
                source.__getitems__(range(start, min(start + _TFDS_READ, len(source))))
            ):
                name = example.get("file_name", b"")
                name = name.decode() if isinstance(name, bytes) else str(name or f"{split}/{start + offset}")
                yield int(example["label"]), name, bytes(example["image"])

    return examples(), len(source), tuple(builder.info.features["label"].names)


def convert_to_shards(
    directory,
    output,
    *,
    per_shard: int = 1024,
    holdout: float = 0.0,
    bad_images: str = "skip",
    tfds_name: str = "",
) -> dict:
    """Writes the shards of both splits to `output` (made if missing) and their index
    (`data.imagenet.SHARD_INDEX`), last. Returns the index.

    Args:
      directory: the image folder; with `tfds_name`, TFDS's data directory holding that dataset prepared as
        array_record files (e.g. "imagenet2012": its "validation" split becomes the test split).
      per_shard, holdout, bad_images: as the command's options (`holdout` and `bad_images` for folders).

    Raises:
      ValueError: a bad argument or folder (as `data.load_folder`), or a TFDS dataset not prepared there;
        `UnreadableImageError` for an unreadable file under `bad_images="raise"`.
    """
    integer(per_shard, "per_shard", minimum=1)
    directory, output = Path(directory).expanduser().resolve(), Path(output).expanduser()
    if tfds_name:
        import tensorflow_datasets as tfds

        builder = tfds.builder(tfds_name, data_dir=str(directory))
        if not builder.is_prepared():
            raise ValueError(f"TFDS's {tfds_name} is not prepared in {printable(directory)}")
    output.mkdir(parents=True, exist_ok=True)
    index = {"format": imagenet.SHARD_FORMAT, "class_names": None, "splits": {}}
    for split in SPLITS:
        examples, count, class_names = (
            _tfds_split(builder, split) if tfds_name else _folder_split(directory, split, holdout, bad_images)
        )
        shards, labels = _write_split(examples, count, output, split, per_shard)
        index["class_names"] = list(class_names)
        index["splits"][split] = {"shards": shards, "labels": labels}
        logging.info("%s: %d images in %d shards", split, count, len(shards))
    write_atomically(output / imagenet.SHARD_INDEX, strict_json(index) + "\n")
    return index


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the image folder (with --tfds: TFDS's data directory)")
    parser.add_argument("output", help="where the shards and their index go")
    parser.add_argument("--per_shard", type=int, default=1024, help="images a shard")
    parser.add_argument("--holdout", type=float, default=0.0, help="without train/ and test/: test fraction")
    parser.add_argument("--bad_images", choices=("skip", "raise"), default="skip")
    parser.add_argument("--tfds", default="", help="a dataset TFDS prepared in DIRECTORY, e.g. imagenet2012")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    index = convert_to_shards(args.directory, args.output, per_shard=args.per_shard, holdout=args.holdout,
                              bad_images=args.bad_images, tfds_name=args.tfds)  # fmt: skip
    sizes = {split: len(entry["labels"]) for split, entry in index["splits"].items()}
    print(f"wrote {sizes} images of {len(index['class_names'])} classes to {args.output}")


if __name__ == "__main__":
    main()
