"""The IDX format of MNIST and Fashion-MNIST (plain or gzipped), read without TensorFlow.

An IDX file is a 4-byte magic number `0, 0, dtype code, rank`, then `rank` big-endian uint32
dimensions, then the values in C order.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

# IDX type codes; multi-byte types are big-endian.
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IdxFormatError(ValueError):
    """A file that is not a well-formed IDX file (named in the message)."""


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in the IDX file `path` (gzipped when it starts with gzip's magic bytes)."""
    with open(path, "rb") as file:
        raw = file.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise IdxFormatError(f"{path}: damaged gzip stream ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _DTYPES:
        raise IdxFormatError(f"{path}: not an IDX file (magic number {raw[:4].hex() or 'missing'})")
    rank = raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise IdxFormatError(f"{path}: header cut short ({len(raw)} bytes for rank {rank})")
    shape = struct.unpack(f">{rank}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise IdxFormatError(f"{path}: {len(raw)} bytes, expected {expected} for shape {shape} of {dtype}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))
