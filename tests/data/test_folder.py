"""Image folders: layout, decoding against the arrays written, statistics, the errors users see, a run."""

import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from jaxcnn import data
from jaxcnn.data import folder
from jaxcnn.data.folder import STATISTICS_FILE
from jaxcnn.training import default_config, train_and_evaluate

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import make_folder_dataset  # noqa: E402


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


def random_images(count, shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def split_folder(root: Path, per_class=(3, 2), shape=(6, 6, 1), classes=("cat", "dog")):
    """`root/train/<class>/i.png` and `root/test/<class>/i.png`; the arrays written, by split and class."""
    written = {}
    for split, count in zip(("train", "test"), per_class):
        for label, name in enumerate(classes):
            images = random_images(count, shape, seed=[label, split == "test"])
            for i, image in enumerate(images):
                write_png(root / split / name / f"{i}.png", image)
            written[split, name] = images
    return written


def test_split_folders_decode_to_the_pixels_written(tmp_path):
    written = split_folder(tmp_path, shape=(6, 5, 3))
    train = data.load_folder(tmp_path, "train")
    test = data.load("folder", "test", data_dir=str(tmp_path))
    assert train.class_names == test.class_names == ("cat", "dog")
    np.testing.assert_array_equal(
        train.images, np.concatenate([written["train", "cat"], written["train", "dog"]])
    )
    np.testing.assert_array_equal(train.labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(
        test.images, np.concatenate([written["test", "cat"], written["test", "dog"]])
    )
    # Both splits carry the training split's statistics, computed once and cached beside the data.
    pixels = np.asarray(train.images) / 255.0
    np.testing.assert_allclose(train.mean, pixels.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(test.std, pixels.std(axis=(0, 1, 2)), rtol=1e-12)
    cached = json.loads((tmp_path / STATISTICS_FILE).read_text())
    assert len(cached) == 1 and cached[0]["mean"] == list(train.mean)
    cached[0]["mean"] = [0.125, 0.25, 0.5]  # the cache is what later loads read
    (tmp_path / STATISTICS_FILE).write_text(json.dumps(cached))
    assert data.load_folder(tmp_path, "test").mean == (0.125, 0.25, 0.5)


def test_resize_grayscale_and_held_out_fraction(tmp_path):
    for label, name in enumerate(("a", "b", "c")):
        for i, image in enumerate(random_images(5, (9, 7, 3), seed=label)):
            write_png(tmp_path / name / f"{i}.{'jpg' if i % 2 else 'png'}", image)
    options = {"image_size": 4, "color": "grayscale", "holdout": 0.4}
    train, test = (data.load_folder(tmp_path, split, **options) for split in ("train", "test"))
    assert train.images.shape == (9, 4, 4, 1) and test.images.shape == (6, 4, 4, 1)
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2, 2])
    # Each class's images are Pillow's own conversion and resize, split 3 train / 2 test.
    for label, name in enumerate(("a", "b", "c")):
        expected = sorted(
            np.asarray(Image.open(p).convert("L").resize((4, 4), Image.Resampling.BILINEAR)).tobytes()
            for p in (tmp_path / name).iterdir()
        )
        split = [train.images[train.labels == label], test.images[test.labels == label]]
        assert sorted(image.tobytes() for images in split for image in images) == expected
    # The held-out images are fixed by the folder, not drawn anew.
    np.testing.assert_array_equal(data.load_folder(tmp_path, "test", **options).images, test.images)


def png_variants(root: Path) -> dict[str, Path]:
    """One small PNG of each kind Pillow writes: 8-bit grayscale and RGB, interlaced, with a transparent
    color, palette, alpha, 16-bit and 1-bit; named by kind."""
    rng = np.random.default_rng(0)
    gray, rgb = rng.integers(0, 256, (7, 5), np.uint8), rng.integers(0, 256, (7, 5, 3), np.uint8)
    images = {
        "L": (Image.fromarray(gray), {}),
        "RGB": (Image.fromarray(rgb), {}),
        "L interlaced": (Image.fromarray(gray), {"interlace": 1}),
        "RGB interlaced": (Image.fromarray(rgb), {"interlace": 1}),
        "L transparent": (Image.fromarray(gray), {"transparency": int(gray[0, 0])}),
        "RGB transparent": (Image.fromarray(rgb), {"transparency": tuple(int(v) for v in rgb[0, 0])}),
        "P": (Image.fromarray(rgb).quantize(16), {}),
        "RGBA": (Image.fromarray(np.dstack([rgb, gray])), {}),
        "LA": (Image.fromarray(np.dstack([gray, gray[::-1]])), {}),
        "I;16": (Image.fromarray(gray.astype(np.uint16) * 257), {}),
        "1": (Image.fromarray(gray > 127), {}),
    }
    paths = {}
    for kind, (image, options) in images.items():
        paths[kind] = root / f"{kind}.png"
        image.save(paths[kind], **options)
    return paths


def test_libspng_decodes_the_pixels_pillow_does_and_only_where_it_can(tmp_path, monkeypatch):
    spng = pytest.importorskip("pyspng")
    decoded_by_libspng = []

    def load(data):
        decoded_by_libspng.append(spng.load(data))
        return decoded_by_libspng[-1]

    paths = png_variants(tmp_path)
    for kind, path in paths.items():
        for mode, image_size in (("L", 0), ("RGB", 0), ("L", 7), ("L", 5), ("RGB", 3)):
            monkeypatch.setattr(folder, "_libspng", lambda: None)
            expected = folder._decode(path, mode, image_size)
            monkeypatch.setattr(folder, "_libspng", lambda: SimpleNamespace(load=load))
            decoded_by_libspng.clear()
            actual = folder._decode(path, mode, image_size)
            np.testing.assert_array_equal(actual, expected, err_msg=f"{kind} as {mode} at {image_size}")
            assert actual.dtype == np.uint8 and actual.shape == expected.shape
            fast = kind.split()[0] == mode and not image_size  # 8-bit L or RGB, as it is in the file
            used = bool(decoded_by_libspng) and np.shares_memory(actual, decoded_by_libspng[-1])
            assert used == fast, (kind, mode, image_size)
    # What libspng cannot read goes to Pillow, which names the problem.
    damaged = tmp_path / "damaged.png"
    whole = paths["L"].read_bytes()
    damaged.write_bytes(whole[:40])
    with pytest.raises(OSError):
        folder._decode(damaged, "L", 0)


def test_a_corrupt_image_is_skipped_and_counted_or_raises_by_key(tmp_path, caplog):
    split_folder(tmp_path)
    bad = tmp_path / "train" / "dog" / "broken.png"
    bad.write_bytes(b"not a png")
    whole = (tmp_path / "train" / "dog" / "0.png").read_bytes()
    (tmp_path / "train" / "dog" / "truncated.png").write_bytes(whole[: len(whole) // 2])
    with caplog.at_level(logging.WARNING):
        train = data.load_folder(tmp_path, "train")
    assert len(train) == 6 and "skipped 2 unreadable image(s) of 8" in caplog.text and str(bad) in caplog.text
    assert np.asarray(train.images).shape == (6, 6, 6, 1)  # the batches never meet the damaged files
    with pytest.raises(ValueError, match=f"cannot read image {bad}"):
        data.load_folder(tmp_path, "train", bad_images="raise")


def test_folder_errors_name_the_path(tmp_path):
    split_folder(tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'train' / 'empty'} holds no images"):
        data.load_folder(tmp_path, "train")
    (tmp_path / "train" / "empty").rmdir()
    write_png(tmp_path / "train" / "dog" / "big.png", random_images(1, (7, 6, 1), seed=9)[0])
    with pytest.raises(ValueError, match=r"big.png is 6x7, .*0.png is 6x6: set image_size"):
        data.load_folder(tmp_path, "train")
    assert data.load_folder(tmp_path, "train", image_size=6).images.shape == (7, 6, 6, 1)
    for split in ("test", "train"):
        (tmp_path / split).rename(tmp_path / f"{split}_moved")
        with pytest.raises(ValueError, match=f"{tmp_path} has no {split}/ subfolder"):
            data.load_folder(tmp_path, "train")
        (tmp_path / f"{split}_moved").rename(tmp_path / split)
    with pytest.raises(ValueError, match="holdout must be 0"):
        data.load_folder(tmp_path, "train", holdout=0.2)
    with pytest.raises(ValueError, match=f"{tmp_path / 'train' / 'cat'} has no train/ and test/ subfolders"):
        data.load_folder(tmp_path / "train" / "cat", "train")
    with pytest.raises(ValueError, match=f"image folder {tmp_path / 'nowhere'} does not exist"):
        data.load_folder(tmp_path / "nowhere", "train")
    with pytest.raises(ValueError, match="config.data.dir"):
        data.load("folder", "train")
    config = default_config()
    config.data.color = "cmyk"
    with pytest.raises(ValueError, match="config.data.color must be one of"):
        train_and_evaluate(config, tmp_path / "run")


def test_make_folder_dataset_then_train_on_it(tmp_path, capsys):
    make_folder_dataset.main(
        [str(tmp_path / "images"), "--dataset", "digits", "--size", "12", "--per_class", "4"]
    )
    assert "train: 40 PNGs of 12x12" in capsys.readouterr().out
    config = default_config()
    config.update_from_flattened_dict(
        {"model": "compact", "model_kwargs": {"features": (4, 8)}, "dataset": "folder", "batch_size": 8,
         "num_steps": 6, "log_every": 3, "checkpoint_every": 6, "data.dir": str(tmp_path / "images")}
    )  # fmt: skip
    result = train_and_evaluate(config, tmp_path / "run")
    assert result.steps == 6 and result.dataset == "folder" and len(result.class_names) == 10
    stored = json.loads((tmp_path / "run" / "result.json").read_text())
    assert stored["class_names"] == result.class_names and 0 <= result.test_accuracy <= 1
