"""Image folders under injected faults: files that pass the load-time scan but do not decode, decompression
bombs, 16-bit PNGs, an oversized `image_size`, zero or damaged cached statistics, a planted symlink, names
with control characters."""

import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_folder import split_folder

from jaxcnn import data
from jaxcnn.data import DataSettings, UnreadableImageError
from jaxcnn.data.folder import STATISTICS_FILE
from jaxcnn.data.pipeline import batch_of


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_chunks(png: bytes):
    position = 8
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        yield png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        position += 12 + length


def corrupt_zlib_stream(path: Path) -> None:
    """Rewrites the PNG `path` with its compressed pixels garbled after the zlib header, every chunk's CRC
    valid: Pillow's `verify` passes, decoding fails ("broken data stream")."""
    png = path.read_bytes()
    garbled = png[:8]
    for kind, payload in png_chunks(png):
        if kind == b"IDAT":
            payload = payload[:2] + bytes(byte ^ 0xFF for byte in payload[2:])
        garbled += png_chunk(kind, payload)
    path.write_bytes(garbled)


def png(samples: np.ndarray, color_type: int, depth: int = 16) -> bytes:
    """A PNG of `samples` `(H, W[, C])` at `depth` bits written by hand (Pillow writes no 16-bit color),
    each row with the Sub filter, so that unfiltering depends on the bytes a pixel takes."""
    height, width = samples.shape[:2]
    sample = ">u2" if depth == 16 else "u1"
    step = (samples.shape[2] if samples.ndim == 3 else 1) * (depth // 8)
    rows = []
    for row in samples:
        raw = np.frombuffer(row.astype(sample).tobytes(), np.uint8).astype(np.int64)
        raw[step:] = (raw[step:] - raw[:-step]) % 256
        rows.append(b"\x01" + raw.astype(np.uint8).tobytes())
    header = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + png_chunk(b"IEND", b"")
    )


def written_images(root: Path, split: str) -> np.ndarray:
    """The PNGs of `root/split` in the order `load_folder` reads them (sorted classes, sorted files)."""
    return np.stack([
        np.asarray(Image.open(path))[..., None]
        for folder in sorted((root / split).iterdir())
        for path in sorted(folder.iterdir())
    ])  # fmt: skip


def test_an_image_that_does_not_decode_is_skipped_named_and_masked_or_raises(tmp_path, caplog):
    split_folder(tmp_path, per_class=(3, 2))
    readable = np.delete(written_images(tmp_path, "train"), 4, axis=0)  # train/dog/1.png is row 4 of 6
    bad = tmp_path / "train" / "dog" / "1.png"
    corrupt_zlib_stream(bad)
    with caplog.at_level(logging.WARNING):
        train = data.load_folder(tmp_path, "train")
    # The scan passes it (valid checksums); the statistics pass decodes it, names it and leaves it out.
    assert len(train) == 6 and f"cannot decode image {bad}" in caplog.text
    assert "1 of the 6 training images do not decode" in caplog.text
    np.testing.assert_allclose(train.mean, [readable.mean() / 255], rtol=1e-12)
    np.testing.assert_allclose(train.std, [(readable / 255).std()], rtol=1e-12)
    # In a batch, its place is masked out and holds the batch's first readable example and its label.
    batch = next(data.batches(train, 6, shuffle=False, normalized=False))
    np.testing.assert_array_equal(batch["mask"], [1, 1, 1, 1, 0, 1])
    np.testing.assert_array_equal(batch["image"], np.insert(readable, 4, readable[0], axis=0))
    np.testing.assert_array_equal(batch["label"], [0, 0, 0, 1, 0, 1])
    # The same in a Grain worker, every epoch, whichever way the statistics were had (cached now).
    stream = data.training_batches(
        data.load_folder(tmp_path, "train"),
        3,
        seed=0,
        steps_per_epoch=2,
        start_step=0,
        stop_step=4,
        workers=1,
    )
    got = list(stream)
    stream.close()
    for step, batch in enumerate(got):
        expected = batch_of(train, data.epoch_order(6, 0, step // 2), step % 2, 3, normalized=False)
        for key in expected:
            np.testing.assert_array_equal(batch[key], expected[key])
    assert sum(float(batch["mask"].sum()) for batch in got) == 10  # 2 epochs of 5 readable images
    # bad_images="raise": the statistics pass names it; with statistics cached, the batch does, also from a
    # Grain worker.
    (tmp_path / STATISTICS_FILE).rename(tmp_path / "cached.json")
    with pytest.raises(UnreadableImageError, match=f"cannot decode image {bad}: broken data stream"):
        data.load_folder(tmp_path, "train", bad_images="raise")
    (tmp_path / "cached.json").rename(tmp_path / STATISTICS_FILE)
    strict = data.load_folder(tmp_path, "train", bad_images="raise")
    with pytest.raises(UnreadableImageError, match=f"cannot decode image {bad}"):
        next(data.batches(strict, 6, shuffle=False))
    stream = data.training_batches(strict, 6, seed=0, steps_per_epoch=1, start_step=0, stop_step=1, workers=1)
    with pytest.raises(UnreadableImageError, match=f"cannot decode image {bad}"):
        next(stream)
    stream.close()


def test_a_decompression_bomb_is_a_skipped_file(tmp_path, caplog):
    split_folder(tmp_path)
    # Headers claiming 30000 x 30000 (over twice Pillow's limit: Pillow raises) and 10000 x 10000 (over
    # it: Pillow only warns), with a few bytes of pixels.
    for side in (30000, 10000):
        header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        pixels = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        (tmp_path / "train" / "cat" / f"bomb{side}.png").write_bytes(
            b"\x89PNG\r\n\x1a\n" + header + pixels + png_chunk(b"IEND", b"")
        )
    with caplog.at_level(logging.WARNING):
        train = data.load_folder(tmp_path, "train")
    assert len(train) == 6 and "skipped 2 unreadable image(s) of 8" in caplog.text
    assert "bomb30000.png" in caplog.text and "bomb10000.png" in caplog.text
    with pytest.raises(UnreadableImageError, match="cannot read image .*bomb10000.png: .*decompression bomb"):
        data.load_folder(tmp_path, "train", bad_images="raise")


def test_an_image_size_beyond_the_decompression_limit_is_refused_before_decoding(tmp_path):
    expected = r"image_size 30000 makes every image 30000x30000 = 900,000,000 pixels: 2.7 GB .* RGB"
    with pytest.raises(ValueError, match=expected):
        DataSettings(image_size=30000)
    split_folder(tmp_path)
    with pytest.raises(ValueError, match=expected):
        data.load_folder(tmp_path, "train", image_size=30000)
    assert DataSettings(image_size=9000).image_size == 9000  # 81,000,000 pixels: under the limit


def test_sixteen_bit_pngs_are_scaled_to_eight_bits_not_clipped(tmp_path):
    # Gradients over the whole 16-bit range, and a few values where the high byte and rounding differ.
    ramp = np.linspace(0, 65535, 48).round().astype(np.uint16)
    ramp[:4] = (128, 129, 255, 65407)
    gray = np.stack([ramp, ramp[::-1]] * 2).reshape(4, 48)
    rgb = np.stack([gray, gray[::-1], np.roll(gray, 7, axis=1)], axis=-1)
    rgba = np.concatenate([rgb, gray[..., None]], axis=-1)
    files = {"gray": png(gray, 0), "rgb": png(rgb, 2), "rgba": png(rgba, 6)}
    for name, payload in files.items():
        for split in ("train", "test"):
            (tmp_path / split / name).mkdir(parents=True)
            (tmp_path / split / name / "0.png").write_bytes(payload)

    def scaled(samples):
        return np.round(samples.astype(np.float64) * 255 / 65535).astype(
            np.uint8
        )  # float64: exact, and never a tie

    train = data.load_folder(tmp_path, "train", color="rgb")
    np.testing.assert_array_equal(train.images[0], np.repeat(scaled(gray)[..., None], 3, axis=-1))
    np.testing.assert_array_equal(train.images[1], scaled(rgb))
    np.testing.assert_array_equal(train.images[2], scaled(rgb))  # the alpha channel dropped
    (tmp_path / "train" / "rgb" / "0.png").unlink()
    (tmp_path / "train" / "rgba" / "0.png").unlink()
    (tmp_path / "train" / "rgb" / "1.png").write_bytes(png(gray, 0))
    (tmp_path / "train" / "rgba" / "1.png").write_bytes(png(gray, 0))
    gray_train = data.load_folder(tmp_path, "train")  # "auto": the first image is 16-bit grayscale
    assert gray_train.image_shape == (4, 48, 1)
    np.testing.assert_array_equal(gray_train.images[0], scaled(gray)[..., None])
    # Pillow's own 16-bit grayscale file decodes the same.
    Image.fromarray(gray).save(tmp_path / "train" / "gray" / "0.png")
    np.testing.assert_array_equal(data.load_folder(tmp_path, "train").images[0], scaled(gray)[..., None])


def test_a_constant_channel_or_damaged_cached_statistics_never_divide_by_zero(tmp_path, caplog):
    for split in ("train", "test"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            Image.new("L", (3, 3), 7).save(tmp_path / split / name / "0.png")
    with caplog.at_level(logging.WARNING):
        train = data.load_folder(tmp_path, "train")
    assert (
        train.mean == (7 / 255,) and train.std == (1.0,) and "channel 0 of the training images" in caplog.text
    )
    assert np.isfinite(next(data.batches(train, 2))["image"]).all()
    with pytest.raises(ValueError, match="std > 0"):
        data.ArrayDataset("x", "train", train.images, train.labels, ("a", "b"), (0.5,), (0.0,))
    # Damaged entries are computed again (and replaced in the cache), with a warning.
    cache = tmp_path / STATISTICS_FILE
    for mean, std in (([0.5], [float("nan")]), ([0.5], [-0.1]), ([0.5, 0.5], [0.1, 0.1]), (["x"], [0.1])):
        entry = json.loads(cache.read_text())[0]
        cache.write_text(json.dumps([{**entry, "mean": mean, "std": std}]))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert data.load_folder(tmp_path, "test").mean == (7 / 255,)
        assert "are damaged" in caplog.text
        assert json.loads(cache.read_text()) == [{**entry, "mean": [7 / 255], "std": [0.0]}]
    cache.write_text("[1, 2")
    assert data.load_folder(tmp_path, "train").std == (1.0,)


def test_the_statistics_cache_does_not_follow_a_planted_symlink(tmp_path):
    split_folder(tmp_path / "images")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "images" / "jaxcnn_statistics.tmp").symlink_to(victim)
    train = data.load_folder(tmp_path / "images", "train")
    assert victim.read_text() == "keep me"
    assert json.loads((tmp_path / "images" / STATISTICS_FILE).read_text())[0]["std"] == list(train.std)


def test_names_with_control_characters_reach_logs_and_messages_escaped(tmp_path, caplog):
    names = ("\x1b[31mred", "new\nline")  # in sorted order
    split_folder(tmp_path, classes=names)
    bad = tmp_path / "train" / names[0] / "0.png"
    bad.write_bytes(b"not a png")
    with caplog.at_level(logging.INFO):
        train = data.load_folder(tmp_path, "train")
    assert train.class_names == names  # the names themselves are kept
    assert "\x1b" not in caplog.text and "new\nline" not in caplog.text
    assert "\\x1b[31mred, new\\nline" in caplog.text and "\\x1b[31mred/0.png" in caplog.text
    with pytest.raises(UnreadableImageError) as raised:
        data.load_folder(tmp_path, "train", bad_images="raise")
    assert "\x1b" not in str(raised.value) and "\n" not in str(raised.value)
    (tmp_path / "train" / "empty\x1b[0m").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*empty\\x1b\[0m holds no images"):
        data.load_folder(tmp_path, "train")
