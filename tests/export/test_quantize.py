"""int8 ONNX artifacts (onnxruntime's static quantization): a run's accuracy kept, bad inputs named."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import train_digits

from jaxcnn import data, export
from jaxcnn.export.onnx import converter_available
from jaxcnn.export.quantize import quantize_onnx

ort = pytest.importorskip("onnxruntime", reason="quantizing ONNX artifacts needs onnxruntime: jaxcnn[onnx]")
onnx = pytest.importorskip("onnx", reason="reading ONNX artifacts needs onnx: jaxcnn[onnx]")


@pytest.mark.slow  # a short training run, then jax2onnx in its tool environment
@pytest.mark.skipif(not converter_available(), reason="no jax2onnx here nor in the tool environment")
def test_an_int8_artifact_classifies_as_its_float32_one(tmp_path):
    workdir = tmp_path / "run"
    train_digits(workdir, num_steps=40, test_examples=0)
    export.export_onnx(export.from_workdir(workdir), tmp_path / "m.onnx")
    train, test = data.load("digits", "train"), data.load("digits", "test")
    calibration = data.normalize(train.images[:256], train.mean, train.std)
    info = quantize_onnx(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", calibration)
    assert info.dtype == "int8" and export.metadata_path(tmp_path / "m.int8.onnx").is_file()
    assert "QuantizeLinear" in {node.op_type for node in onnx.load(tmp_path / "m.int8.onnx").graph.node}
    x = data.normalize(test.images, test.mean, test.std)
    accuracy = {}
    for name in ("m.onnx", "m.int8.onnx"):
        session = ort.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
        accuracy[name] = np.mean(session.run(None, {"images": x})[0].argmax(-1) == test.labels)
    assert accuracy["m.onnx"] > 0.8 and abs(accuracy["m.int8.onnx"] - accuracy["m.onnx"]) <= 0.02


def test_only_float32_onnx_artifacts_are_quantized(tmp_path):
    info = export.ServingInfo((8, 8, 1), format="stablehlo")
    export.metadata_path(tmp_path / "m.stablehlo").write_text(info.to_json())
    with pytest.raises(ValueError, match="not a float32 ONNX export"):
        quantize_onnx(tmp_path / "m.stablehlo", tmp_path / "q.onnx", np.zeros((4, 8, 8, 1), np.float32))
    onnx_info = export.ServingInfo((8, 8, 1), format="onnx")
    export.metadata_path(tmp_path / "m.onnx").write_text(onnx_info.to_json())
    with pytest.raises(ValueError, match="calibration_images is empty"):
        quantize_onnx(tmp_path / "m.onnx", tmp_path / "q.onnx", np.zeros((0, 8, 8, 1), np.float32))
    assert not (tmp_path / "q.onnx").exists()
