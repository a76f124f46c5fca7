"""The IDX reader on files the tests write byte by byte, plain and gzipped, good and damaged."""

import numpy as np
import pytest
from datafiles import write_idx, write_mnist_split

from jaxcnn.data import IdxFormatError, read_idx, read_idx_split


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "type_code, dtype", [(0x08, np.uint8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32)]
)
def test_round_trip(tmp_path, compress, type_code, dtype):
    array = (np.arange(2 * 3 * 4) * 7 % 251).astype(dtype).reshape(2, 3, 4)
    read = read_idx(write_idx(tmp_path / "x.idx", array, type_code, compress))
    assert read.dtype == dtype and read.dtype.isnative
    np.testing.assert_array_equal(read, array)


def test_hand_written_bytes(tmp_path):
    # magic 0x00000801 (uint8, rank 1), one dimension of 3, then 3 label bytes.
    (tmp_path / "labels").write_bytes(bytes.fromhex("00000801 00000003 090102"))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels"), [9, 1, 2])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "not an IDX file"),
        (bytes.fromhex("01020304"), "not an IDX file"),
        (bytes.fromhex("00000f01"), "not an IDX file"),  # unknown type code
        (bytes.fromhex("00000802 00000002"), "header cut short"),
        (bytes.fromhex("00000801 00000003 0901"), "expected 11"),
    ],
)
def test_damaged_files_are_named(tmp_path, raw, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(raw)
    with pytest.raises(IdxFormatError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_truncated_gzip(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.zeros((4, 4), np.uint8), compress=True)
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(IdxFormatError, match="gzip"):
        read_idx(path)


def test_split_reader_checks_shapes(tmp_path):
    images, labels = np.zeros((5, 4, 4), np.uint8), np.arange(5, dtype=np.uint8)
    write_mnist_split(tmp_path, "test", images, labels, compress=False)
    got_images, got_labels = read_idx_split(tmp_path, "test")
    assert got_images.shape == (5, 4, 4) and list(got_labels) == [0, 1, 2, 3, 4]
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:4])
    with pytest.raises(IdxFormatError, match="4 labels|\\(4,\\) labels"):
        read_idx_split(tmp_path, "test")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        read_idx_split(tmp_path, "train")
