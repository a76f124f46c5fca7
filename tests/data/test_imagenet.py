"""ImageNet-grade input (data/imagenet.py): crop geometry by hand, draft decoding against full decoding,
TrivialAugment against numpy, determinism per (seed, epoch, row), shards, workers, bad images."""

import io
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from jaxcnn import data
from jaxcnn.data import imagenet
from jaxcnn.data.datasets import DataSettings, UnreadableImageError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import convert_to_shards  # noqa: E402
import make_jpegs  # noqa: E402


class ScriptedRng:
    """A `np.random.Generator` stand-in returning scripted draws, recording each call's bounds."""

    def __init__(self, uniforms=(), integers=()):
        self.uniforms, self.integer_draws, self.calls = list(uniforms), list(integers), []

    def uniform(self, low, high):
        value = self.uniforms.pop(0)
        assert low <= value <= high
        return value

    def integers(self, low, high=None):
        self.calls.append((low, high))
        return self.integer_draws.pop(0)


def test_random_resized_box_follows_its_draws():
    # Area 0.5 of 500x375 = 93,750 at ratio 1: a square of round(306.19) = 306, at (left 20, top 10).
    rng = ScriptedRng(uniforms=[0.5, 0.0], integers=[10, 20])
    assert imagenet.random_resized_box(rng, 500, 375) == (20, 10, 306, 306)
    assert rng.calls == [(0, 375 - 306 + 1), (0, 500 - 306 + 1)]
    # The whole area at ratio 4/3 is the whole image: one place only.
    rng = ScriptedRng(uniforms=[1.0, np.log(4 / 3)], integers=[0, 0])
    assert imagenet.random_resized_box(rng, 500, 375) == (0, 0, 500, 375)


def test_random_resized_box_falls_back_to_the_center_after_ten_misses():
    # 1000x300 at the whole area and ratio 4/3 needs 632x474: taller than 300, ten times; then the widest
    # ratio allowed, 4/3, of the full height: 400x300 in the middle.
    rng = ScriptedRng(uniforms=[1.0, np.log(4 / 3)] * imagenet.CROP_ATTEMPTS)
    assert imagenet.random_resized_box(rng, 1000, 300) == (300, 0, 400, 300)
    rng = ScriptedRng(uniforms=[1.0, np.log(3 / 4)] * imagenet.CROP_ATTEMPTS)  # 474x632 in 300x1000
    assert imagenet.random_resized_box(rng, 300, 1000) == (0, 300, 300, 400)
    assert imagenet.random_resized_box(ScriptedRng([1.0, np.log(3 / 4)] * 10), 500, 375) == (0, 0, 500, 375)


def test_random_resized_boxes_stay_in_the_image_within_scale_and_ratio():
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, width, height = imagenet.random_resized_box(rng, 500, 375)
        assert 0 <= left and left + width <= 500 and 0 <= top and top + height <= 375
        assert 0.08 * 0.95 <= width * height / (500 * 375) <= 1.0
        assert 3 / 4 * 0.97 <= width / height <= 4 / 3 * 1.03  # up to the rounding of each side


def test_center_box_is_flax_examples():
    # Flax: side int(224 / 256 * min(h, w)), offsets ((h - side) + 1) // 2 and ((w - side) + 1) // 2.
    assert imagenet.center_box(500, 375) == (86, 24, 328, 328)
    assert imagenet.center_box(375, 500) == (24, 86, 328, 328)
    assert imagenet.center_box(1, 1) == (0, 0, 1, 1)


def test_draft_scale_keeps_the_box_at_least_image_size():
    assert imagenet.draft_scale(447, 1000, 224) == 1
    assert imagenet.draft_scale(448, 448, 224) == 2
    assert imagenet.draft_scale(1000, 900, 224) == 4
    assert imagenet.draft_scale(4000, 1800, 224) == 8
    assert imagenet.draft_scale(10, 10, 224) == 1


def smooth_jpeg(width=1000, height=800, quality=95) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 / width, y * 255 / height, 128 + 60 * np.sin(x / 37) * np.cos(y / 53)], -1)
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def full_view(data_bytes: bytes, image_size: int, box) -> np.ndarray:
    """The reference: the whole image decoded, the box resized by Pillow."""
    left, top, width, height = box
    with Image.open(io.BytesIO(data_bytes)) as image:
        image = image.convert("RGB")
        return np.asarray(
            image.resize(
                (image_size, image_size),
                Image.Resampling.BILINEAR,
                box=(left, top, left + width, top + height),
            )
        )


def test_draft_decoding_equals_full_decoding_and_resizing_within_tolerance(monkeypatch):
    encoded = smooth_jpeg()
    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(
        JpegImagePlugin.JpegImageFile,
        "draft",
        lambda self, *a: drafts.append(original(self, *a)) or drafts[-1],
    )
    box = imagenet.center_box(1000, 800)  # 700x700 to 112: decoded at a quarter of 1000x800
    view = imagenet.decode_view(encoded, 112, None).astype(int)
    assert view.shape == (112, 112, 3) and drafts[-1][1] == (0, 0, 250, 200)
    difference = np.abs(view - full_view(encoded, 112, box))
    assert difference.mean() < 1.0 and difference.max() <= 8
    for seed in range(4):  # training views: the box their draws give, then a flip or not (both compared)
        box = imagenet.random_resized_box(np.random.default_rng(seed), 1000, 800)
        view = imagenet.decode_view(encoded, 112, np.random.default_rng(seed)).astype(int)
        reference = full_view(encoded, 112, box)
        assert min(np.abs(view - reference).mean(), np.abs(view - reference[:, ::-1]).mean()) < 1.0
    assert len(drafts) == 5


def test_png_views_are_exact_and_flips_mirror(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    encoded = buffer.getvalue()
    np.testing.assert_array_equal(
        imagenet.decode_view(encoded, 16, None), full_view(encoded, 16, imagenet.center_box(80, 60))
    )
    flips = set()
    for seed in range(8):
        rng = np.random.default_rng(seed)
        box = imagenet.random_resized_box(rng, 80, 60)
        flip = bool(rng.integers(2))
        flips.add(flip)
        reference = full_view(encoded, 16, box)
        expected = reference[:, ::-1] if flip else reference
        np.testing.assert_array_equal(
            imagenet.decode_view(encoded, 16, np.random.default_rng(seed)), expected
        )
    assert flips == {True, False}


def test_grayscale_and_cmyk_jpegs_decode_to_rgb():
    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        Image.new(mode, (40, 30), 100 if mode == "L" else (10, 20, 30, 40)).save(buffer, format="JPEG")
        assert imagenet.decode_view(buffer.getvalue(), 8, np.random.default_rng(0)).shape == (8, 8, 3)


def rgb_image(seed=0, size=(48, 40)):
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels), pixels


def test_trivial_augment_operations_against_numpy():
    image, pixels = rgb_image()
    rng = np.random.default_rng(0)
    apply = imagenet.trivial_augment
    np.testing.assert_array_equal(apply(rng, image, "identity", 30), pixels)
    np.testing.assert_array_equal(apply(rng, image, "posterize", 0), pixels)  # 8 bits kept
    np.testing.assert_array_equal(apply(rng, image, "posterize", 30), pixels & 0b11000000)  # 2 bits
    np.testing.assert_array_equal(apply(rng, image, "solarize", 30), 255 - pixels)  # threshold 0
    np.testing.assert_array_equal(apply(rng, image, "solarize", 0), np.where(pixels >= 255, 0, pixels))
    shifted = {}
    for _ in range(16):  # 32 pixels right or left (a random sign), zeros coming in
        moved = np.asarray(apply(rng, image, "translate_x", 30))
        shifted[bool(moved[:, :32].any())] = moved
    right, left = np.zeros_like(pixels), np.zeros_like(pixels)
    right[:, 32:], left[:, :-32] = pixels[:, :-32], pixels[:, 32:]
    np.testing.assert_array_equal(shifted[False], right)
    np.testing.assert_array_equal(shifted[True], left)
    for name in imagenet.TRIVIAL_OPERATIONS:
        assert np.asarray(apply(rng, image, name, 15)).shape == pixels.shape
    assert set(imagenet.TRIVIAL_OPERATIONS) == set(imagenet._trivial_operations())
    with pytest.raises(ValueError, match="operation must be one of"):
        apply(rng, image, "blur", 3)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    directory = tmp_path_factory.mktemp("jpegs")
    make_jpegs.write_jpegs(directory, classes=2, per_class=6, test_per_class=2, size=(64, 48))
    return directory


def test_views_are_a_function_of_seed_epoch_and_row(jpeg_folder):
    train = data.load_imagenet(jpeg_folder, "train", image_size=24, trivial_augment=True)
    assert train.image_shape == (24, 24, 3) and train.class_names == ("class_0", "class_1")
    np.testing.assert_array_equal(train.labels, [0] * 6 + [1] * 6)
    rows = np.asarray([5, 2, 9])
    views, readable = train.images.gather(rows, (0, 1))
    assert readable.all()
    np.testing.assert_array_equal(train.images.gather(rows[::-1], (0, 1))[0], views[::-1])  # per row
    assert not np.array_equal(train.images.gather(rows, (0, 2))[0], views)  # another epoch
    assert not np.array_equal(train.images.gather(rows, (1, 1))[0], views)  # another seed
    centers = train.images[rows]  # no draw: the evaluation views, as the statistics see them
    np.testing.assert_array_equal(train.images.gather(rows)[0], centers)
    test = data.load("imagenet", "test", data_dir=str(jpeg_folder), image_size=24)
    assert (test.mean, test.std) == (train.mean, train.std) and len(test) == 4
    np.testing.assert_array_equal(test.images.gather(np.arange(2), (0, 1))[0], test.images[np.arange(2)])


def test_training_stream_resumes_bit_identically_with_random_views(jpeg_folder):
    train = data.load_imagenet(jpeg_folder, "train", image_size=16)
    kwargs = {"seed": 3, "steps_per_epoch": 3, "stop_step": 6}
    whole = list(data.training_batches(train, 4, start_step=0, **kwargs))
    resumed = list(data.training_batches(train, 4, start_step=4, **kwargs))
    for a, b in zip(whole[4:], resumed, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
    plain = list(data.batches(train, 4, seed=3, epoch=1, normalized=False))
    np.testing.assert_array_equal(plain[0]["image"], whole[3]["image"])
    # The same row in two epochs is two views: the first example of epoch 0 found again in epoch 1.
    row = data.epoch_order(len(train), 3, 0)[0]
    position = int(np.flatnonzero(data.epoch_order(len(train), 3, 1) == row)[0])
    again = whole[3 + position // 4]["image"][position % 4]
    assert not np.array_equal(whole[0]["image"][0], again)


@pytest.mark.slow
def test_workers_give_the_batches_of_the_main_process(jpeg_folder):
    train = data.load_imagenet(jpeg_folder, "train", image_size=16, trivial_augment=True)
    kwargs = {"seed": 0, "steps_per_epoch": 3, "start_step": 1, "stop_step": 5}
    main = list(data.training_batches(train, 4, workers=0, **kwargs))
    stream = data.training_batches(train, 4, workers=2, **kwargs)
    try:
        in_workers = list(stream)
    finally:
        stream.close()
    for a, b in zip(main, in_workers, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_shards_round_trip_to_the_folders_views(jpeg_folder, tmp_path):
    index = convert_to_shards.convert_to_shards(jpeg_folder, tmp_path / "shards", per_shard=5)
    assert [len(index["splits"][s]["shards"]) for s in ("train", "test")] == [3, 1]
    for split in ("train", "test"):
        folder_split = data.load_imagenet(jpeg_folder, split, image_size=16)
        shard_split = data.load("imagenet", split, data_dir=str(tmp_path / "shards"), image_size=16)
        assert shard_split.class_names == folder_split.class_names
        np.testing.assert_array_equal(shard_split.labels, folder_split.labels)
        rows = np.arange(len(folder_split))
        for draw in ((), (4, 2)):
            np.testing.assert_array_equal(
                shard_split.images.gather(rows, draw)[0], folder_split.images.gather(rows, draw)[0]
            )
    label, name, encoded = imagenet.parse_record(imagenet.encode_record(7, "n01/é.jpg", b"\xff\xd8 bytes"))
    assert (label, name, encoded) == (7, "n01/é.jpg", b"\xff\xd8 bytes")


def test_a_shard_folder_without_its_index_is_refused(tmp_path):
    (tmp_path / "train-00000-of-00002.array_record").write_bytes(b"")  # a conversion that stopped
    with pytest.raises(ValueError, match="no jaxcnn_shards.json: their conversion did not finish"):
        data.load_imagenet(tmp_path, "train", image_size=8)
    (tmp_path / imagenet.SHARD_INDEX).write_text('{"format": 1, "splits": {"train": {}}}')
    with pytest.raises(ValueError, match="not a readable shard index"):
        data.load_imagenet(tmp_path, "train", image_size=8)


def test_bad_images_are_left_out_or_masked_or_raise(jpeg_folder, tmp_path, caplog):
    folder = tmp_path / "images"
    make_jpegs.write_jpegs(folder, classes=2, per_class=3, test_per_class=1, size=(40, 30))
    (folder / "train" / "class_0" / "junk.jpg").write_bytes(b"not an image")  # its header does not read
    truncated = (folder / "train" / "class_1" / "00000.jpg").read_bytes()
    (folder / "train" / "class_1" / "00000.jpg").write_bytes(
        truncated[: len(truncated) * 7 // 10]
    )  # the scan cut short
    with caplog.at_level(logging.WARNING):
        train = data.load_imagenet(folder, "train", image_size=8)
    assert len(train) == 6 and "junk.jpg" in caplog.text  # left out while loading, named
    batch = next(data.batches(train, 6, seed=0, epoch=0, shuffle=False, normalized=False))
    np.testing.assert_array_equal(batch["mask"], [1, 1, 1, 0, 1, 1])  # decoding fails in its batch
    np.testing.assert_array_equal(batch["image"][3], batch["image"][0])  # the batch's first readable image
    assert "00000.jpg" in caplog.text
    with pytest.raises(UnreadableImageError, match="junk.jpg"):
        data.load_imagenet(folder, "train", image_size=8, bad_images="raise")
    (folder / "train" / "class_0" / "junk.jpg").unlink()  # another folder: its statistics are computed again
    with pytest.raises(UnreadableImageError, match="00000.jpg"):  # by decoding, which meets it
        data.load_imagenet(folder, "train", image_size=8, bad_images="raise")
    data.load_imagenet(folder, "train", image_size=8)  # statistics cached without it
    strict = data.load_imagenet(folder, "train", image_size=8, bad_images="raise")
    with pytest.raises(UnreadableImageError, match="00000.jpg"):
        strict.images.gather(np.arange(6), (0, 0))
    shards = convert_to_shards.convert_to_shards(folder, tmp_path / "shards")
    assert len(shards["splits"]["train"]["labels"]) == 6
    from_shards = data.load_imagenet(tmp_path / "shards", "train", image_size=8)
    np.testing.assert_array_equal(from_shards.images.gather(np.arange(6), (0, 0))[1], [1, 1, 1, 0, 1, 1])


def test_settings_and_arguments_are_checked(jpeg_folder):
    with pytest.raises(ValueError, match="config.data.image_size"):
        data.load("imagenet", "train", data_dir=str(jpeg_folder))
    with pytest.raises(ValueError, match="config.data.dir"):
        data.load("imagenet", "train", image_size=8)
    with pytest.raises(TypeError, match="trivial_augment"):
        DataSettings(trivial_augment="yes")
    with pytest.raises(ValueError, match="do not exist"):
        data.load_imagenet(jpeg_folder / "missing", "train", image_size=8)
    options = DataSettings(dir="/x", image_size=8, trivial_augment=True).load_options("imagenet")
    assert options["trivial_augment"] is True and options["image_size"] == 8 and "color" not in options


def test_a_prepared_tfds_copy_converts_to_shards_of_its_encoded_images(tmp_path):
    from test_datasets import prepare_tiny_tfds, tiny_split

    splits = {"train": tiny_split("train"), "test": tiny_split("test")}
    prepare_tiny_tfds(tmp_path / "tfds", splits)
    index = convert_to_shards.convert_to_shards(
        tmp_path / "tfds", tmp_path / "shards", per_shard=5, tfds_name="fashion_mnist"
    )
    assert index["class_names"][0] == "T-shirt/top" and len(index["splits"]["train"]["shards"]) == 3
    test = data.load_imagenet(tmp_path / "shards", "test", image_size=28)
    expected = []  # the PNGs TFDS stored, as jaxcnn decodes any PNG, with their labels
    for image, label in zip(*splits["test"], strict=True):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        expected.append((full_view(buffer.getvalue(), 28, imagenet.center_box(28, 28)), label))
    found = []  # TFDS stores its examples in its own order
    for row in range(len(test)):
        matches = [i for i, (view, label) in enumerate(expected) if np.array_equal(view, test.images[row])]
        assert len(matches) == 1 and expected[matches[0]][1] == test.labels[row]
        found += matches
    assert sorted(found) == list(range(len(expected)))
    with pytest.raises(ValueError, match="mnist is not prepared"):
        convert_to_shards.convert_to_shards(tmp_path / "tfds", tmp_path / "other", tfds_name="mnist")
