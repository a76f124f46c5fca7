"""StableHLO export: every zoo model's artifact gives its eval logits, a reader needs only JAX, and bad
options are refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FAST, ZOO, eval_logits, zoo_model
from flax import nnx

from jaxcnn import data, export, models


def images(shape, batch, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, *shape)), jnp.float32)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in sorted(ZOO)]
)
def test_every_zoo_model_exports_its_eval_logits_at_any_batch(name, tmp_path):
    model, shape = zoo_model(name), ZOO[name]
    export.export_stablehlo(export.from_model(model, input_shape=shape), tmp_path / "m.stablehlo")
    exported, info = export.load_stablehlo(tmp_path / "m.stablehlo")
    assert exported.platforms == ("cpu", "cuda", "tpu") and info.input_shape == shape and info.batch is None
    for batch in (7, 1):  # each side compiled for this batch size, so that XLA rounds them alike
        x = images(shape, batch)
        expected = eval_logits(model, x)
        assert np.isfinite(expected).all() and (batch == 1 or np.ptp(expected) > 0.01)
        np.testing.assert_allclose(exported.call(x), expected, rtol=0, atol=1e-6, equal_nan=False)


def test_a_model_built_for_onednn_exports_without_its_custom_call(tmp_path):
    # impl="auto" picks jaxcnn's oneDNN custom call on CPU where the extension loads: a serialized program
    # cannot hold it (jax.export refuses), so the export lowers the portable way and computes the same.
    model = zoo_model("lenet5", impl="auto")
    x = images(ZOO["lenet5"], 7)
    path = tmp_path / "m.stablehlo"
    export.export_stablehlo(export.from_model(model, input_shape=ZOO["lenet5"]), path)
    exported, _ = export.load_stablehlo(path)
    assert "jaxcnn_onednn" not in exported.mlir_module()
    assert all(module.impl == "auto" for _, module in nnx.iter_modules(model) if hasattr(module, "impl"))
    np.testing.assert_allclose(exported.call(x), eval_logits(model, x), rtol=1e-5, atol=1e-5)


def test_the_linen_form_and_its_variables_export_as_the_nnx_model(tmp_path):
    model = zoo_model("lenet5")
    linen = models.create("lenet5", num_classes=10)
    servable = export.from_model(linen, variables=models.linen_variables(model), input_shape=ZOO["lenet5"])
    export.export_stablehlo(servable, tmp_path / "m.stablehlo", batch=3)
    exported, info = export.load_stablehlo(tmp_path / "m.stablehlo")
    x = images(ZOO["lenet5"], 3)
    assert info.batch == 3 and exported.in_avals[0].shape == (3, *ZOO["lenet5"])
    np.testing.assert_allclose(exported.call(x), eval_logits(model, x), rtol=0, atol=1e-6)


def raw_pixels(shape, batch, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (batch, *shape), dtype=np.uint8)


READER = """
import json, sys
import numpy as np
sys.modules["jaxcnn"] = sys.modules["flax"] = None  # importing either fails: the reader needs only jax
import jax

exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
info = json.load(open(sys.argv[2]))
images = np.load(sys.argv[3])  # uint8 (N, H, W, C), as the run's data pipeline reads them
logits = exported.call(images)
np.save(sys.argv[4], np.asarray(logits))
print(info["class_names"][int(np.argmax(logits[0]))])
"""


def test_a_reader_with_only_jax_runs_raw_images_as_the_pipeline_normalizes_them(tmp_path):
    model, shape = zoo_model("lenet5"), ZOO["lenet5"]
    names = [f"class {i}" for i in range(10)]
    servable = export.from_model(model, input_shape=shape, class_names=names, mean=(0.3,), std=(0.2,))
    path = tmp_path / "m.stablehlo"
    export.export_stablehlo(servable, path, raw_images=True)
    pixels = raw_pixels(shape, 5)
    np.save(tmp_path / "x.npy", pixels)
    reader = tmp_path / "reader.py"
    reader.write_text(READER)
    args = [path, export.metadata_path(path), tmp_path / "x.npy", tmp_path / "y.npy"]
    done = subprocess.run([sys.executable, reader, *map(str, args)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = eval_logits(model, data.normalize(pixels, (0.3,), (0.2,)))
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=0, atol=1e-6)
    assert done.stdout.strip() == names[int(np.argmax(expected[0]))]
    assert json.loads(export.metadata_path(path).read_text())["raw_images"] is True


def test_bfloat16_export_takes_bfloat16_images_and_gives_float32_logits_near_float32s(tmp_path):
    model, shape = zoo_model("resnet20"), ZOO["resnet20"]
    export.export_stablehlo(export.from_model(model, input_shape=shape), tmp_path / "m", dtype="bfloat16")
    exported, info = export.load_stablehlo(tmp_path / "m")
    x = images(shape, 4)
    logits = exported.call(x.astype(jnp.bfloat16))
    assert info.dtype == "bfloat16" and logits.dtype == jnp.float32
    expected = eval_logits(model, x)
    np.testing.assert_allclose(logits, expected, atol=0.1 * float(jnp.abs(expected).max()))


@pytest.mark.parametrize(
    "options, match",
    [
        ({"batch": 0}, "batch"),
        ({"dtype": "float16"}, "dtype"),
        ({"raw_images": True}, "raw_images"),
        ({"path": "model.json"}, "path"),
    ],
)
def test_bad_options_are_named_and_nothing_is_written(tmp_path, options, match):
    servable = export.from_model(zoo_model("lenet5"), input_shape=ZOO["lenet5"])  # no mean and std
    path = tmp_path / options.pop("path", "m.stablehlo")
    with pytest.raises(ValueError, match=match):
        export.export_stablehlo(servable, path, **options)
    assert list(tmp_path.iterdir()) == []


def test_bad_models_are_named():
    with pytest.raises(TypeError, match="model must be"):
        export.from_model(lambda x: x, input_shape=(8, 8, 1))
    with pytest.raises(TypeError, match="variables"):
        export.from_model(models.create("lenet5"), input_shape=(16, 16, 1))
    with pytest.raises(ValueError, match="input_shape"):
        export.from_model(zoo_model("lenet5"), input_shape=(16, 16))
    with pytest.raises(ValueError, match="mean and std"):
        export.from_model(zoo_model("lenet5"), input_shape=(16, 16, 1), mean=(0.5, 0.5), std=(1, 1))
