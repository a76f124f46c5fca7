"""ONNX export through jax2onnx: every zoo model's artifact gives its eval logits under onnxruntime, at a
dynamic batch, in either layout, from normalized or raw images; unsupported options are refused first."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODEL_KWARGS, ZOO, eval_logits, zoo_model

from jaxcnn import export, models
from jaxcnn.export.onnx import converter_available

ort = pytest.importorskip("onnxruntime", reason="running ONNX artifacts needs onnxruntime: jaxcnn[onnx]")
onnx = pytest.importorskip("onnx", reason="checking ONNX artifacts needs onnx: jaxcnn[onnx]")
needs_converter = pytest.mark.skipif(
    not converter_available(), reason="no jax2onnx here nor in the tool environment: bash setup.sh export"
)
# The bounds: 1e-5 for lenet5 and resnet18, 1e-4 for the others (max |onnxruntime - jaxcnn|).
TOLERANCE = {"lenet5": 1e-5, "resnet18": 1e-5}
# jax2onnx 0.17.1 has no ONNX for the transposed convolution's layout (lhs dilation, flipped kernel).
NO_ONNX_FORM = {"unet_small": "Unsupported conv layouts"}


def zoo_servable(name, **info):
    model = zoo_model(name)
    return export.from_zoo(
        name, models.linen_variables(model), input_shape=ZOO[name], num_classes=10,
        **MODEL_KWARGS.get(name, {}), **info,
    )  # fmt: skip


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


@needs_converter
@pytest.mark.slow  # each conversion runs jax2onnx in its own environment: 10-60 s
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_gives_its_eval_logits_under_onnxruntime(name, tmp_path):
    servable, shape = zoo_servable(name), ZOO[name]
    path = tmp_path / "m.onnx"
    if name in NO_ONNX_FORM:
        with pytest.raises(ValueError, match=f"model {name} has no ONNX form: .*{NO_ONNX_FORM[name]}"):
            export.export_onnx(servable, path)
        assert list(tmp_path.iterdir()) == []
        return
    export.export_onnx(servable, path)
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert min(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    x = np.random.default_rng(0).standard_normal((8, *shape)).astype(np.float32)
    expected = np.asarray(eval_logits(zoo_model(name), x))
    assert np.isfinite(expected).all() and np.ptp(expected) > 0.01
    for rows in (slice(0, 7), slice(7, 8)):
        got = run(path, x[rows])
        np.testing.assert_allclose(got, expected[rows], rtol=0, atol=TOLERANCE.get(name, 1e-4))


@needs_converter
@pytest.mark.slow  # a conversion in the tool environment
def test_nchw_raw_images_are_normalized_as_the_pipeline_does(tmp_path):
    from jaxcnn import data

    servable = zoo_servable("lenet5", mean=(0.3,), std=(0.2,), class_names=[str(i) for i in range(10)])
    path = tmp_path / "m.onnx"
    info = export.export_onnx(servable, path, raw_images=True, layout="NCHW", batch=3)
    assert (info.layout, info.raw_images, info.batch) == ("NCHW", True, 3)
    assert export.ServingInfo.from_json(export.metadata_path(path).read_text()) == info
    pixels = np.random.default_rng(1).integers(0, 256, (3, *ZOO["lenet5"]), dtype=np.uint8)
    expected = np.asarray(eval_logits(zoo_model("lenet5"), data.normalize(pixels, (0.3,), (0.2,))))
    np.testing.assert_allclose(run(path, pixels.transpose(0, 3, 1, 2)), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"dtype": "bfloat16"}, "dtype 'bfloat16' is not supported by the ONNX export"),
        ({"layout": "NWHC"}, "layout"),
        ({"opset": 13}, "opset"),
        ({"batch": 0}, "batch"),
    ],
)
def test_unsupported_options_are_named_before_anything_is_written(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        export.export_onnx(zoo_servable("lenet5"), tmp_path / "m.onnx", **options)
    assert list(tmp_path.iterdir()) == []
