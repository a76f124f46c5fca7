"""int8 ONNX artifacts: onnxruntime's post-training static quantization of a float32 ONNX export, its
activation ranges calibrated on a few hundred training images.

    quantize_onnx("lenet5.onnx", "lenet5.int8.onnx", calibration_images)   # images as the artifact takes
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from jaxcnn.export.onnx import INPUT_NAME
from jaxcnn.export.servable import ServingInfo
from jaxcnn.export.stablehlo import metadata_path, write_artifact


def quantize_onnx(
    model: str | os.PathLike,
    out: str | os.PathLike,
    calibration_images: np.ndarray,
    *,
    batch_size: int = 64,
) -> ServingInfo:
    """Writes `model` (an `export_onnx` artifact of float32 images) quantized to int8 to `out`, with its
    metadata: QDQ format, weights per channel (symmetric), activations per tensor (asymmetric uint8), their
    ranges the min-max of `calibration_images` (what the artifact takes: `(N, H, W, C)` float32, or raw uint8
    pixels, as its metadata says).

    Raises:
      ValueError: no calibration images, or `model` is not a float32 ONNX export.
      ImportError: onnxruntime is missing (`pip install jaxcnn[onnx]`).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    info = ServingInfo.from_json(metadata_path(model).read_text())
    if info.format != "onnx" or info.dtype != "float32":
        raise ValueError(
            f"model {os.fspath(model)!r} is not a float32 ONNX export ({info.format}, {info.dtype})"
        )
    if len(calibration_images) == 0:
        raise ValueError("calibration_images is empty")
    step = info.batch or batch_size

    class Batches(CalibrationDataReader):
        def __init__(self):
            starts = range(
                0, len(calibration_images) - step + 1 if info.batch else len(calibration_images), step
            )
            self.batches = iter([{INPUT_NAME: calibration_images[i : i + step]} for i in starts])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="jaxcnn-int8-") as directory:
        prepared, quantized = Path(directory) / "prepared.onnx", Path(directory) / "int8.onnx"
        quant_pre_process(os.fspath(model), os.fspath(prepared))  # shapes inferred, graph optimized first
        quantize_static(
            os.fspath(prepared),
            os.fspath(quantized),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            # the adjustment fails on the biases jax2onnx writes (not 1-d, for broadcasting: onnxruntime 1.32)
            extra_options={"QDQDisableWeightAdjustForInt32Bias": True},
        )
        payload = quantized.read_bytes()
    info = dataclasses.replace(info, dtype="int8")
    write_artifact(Path(out), payload, info)
    return info
