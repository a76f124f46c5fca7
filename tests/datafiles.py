"""Dataset files written from their format's definition, independent of jaxcnn's readers (for tests)."""

import gzip
import io
import struct
import tarfile

import numpy as np


def write_idx(path, array, type_code=0x08, compress=False):
    """An IDX file written from the format's definition, independent of the reader."""
    big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    raw = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += np.ascontiguousarray(array, big_endian).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def write_mnist_split(directory, split, images, labels, compress=True):
    prefix = "train" if split == "train" else "t10k"
    suffix = ".gz" if compress else ""
    write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
    write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)


def random_cifar(count, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, count).astype(
        np.uint8
    )


def write_cifar10_archive(path, splits):
    """CIFAR-10's binary archive layout: records of one label byte and 3x32x32 channel-major pixels."""
    with tarfile.open(path, "w:gz") as archive:
        for member, (images, labels) in splits.items():
            records = np.concatenate(
                [labels[:, None], images.transpose(0, 3, 1, 2).reshape(len(labels), -1)], 1
            )
            raw = records.astype(np.uint8).tobytes()
            entry = tarfile.TarInfo(f"cifar-10-batches-bin/{member}")
            entry.size = len(raw)
            archive.addfile(entry, io.BytesIO(raw))
    return path


def cifar10_splits(train_per_batch: int, test_count: int) -> dict:
    """Random contents for every member of CIFAR-10's archive: five training batches and the test batch."""
    members = {f"data_batch_{i}.bin": random_cifar(train_per_batch, i) for i in range(1, 6)}
    return members | {"test_batch.bin": random_cifar(test_count, 0)}
