"""A trained model leaves jaxcnn: StableHLO artifacts (`jax.export`) that JAX alone runs, and ONNX ones
(jax2onnx; int8 by onnxruntime's quantization), each with a metadata file beside it.

    servable = jaxcnn.export.from_workdir("runs/lenet5")      # or from_model(...), from_checkpoint(...)
    jaxcnn.export.export_stablehlo(servable, "lenet5.stablehlo", raw_images=True)
    jaxcnn.export.export_onnx(servable, "lenet5.onnx")                   # after: bash setup.sh export
    jaxcnn.export.Predictor.load("lenet5.stablehlo").predict_files(["photos/"])   # or the workdir

Every export lowers convolutions and pools through plain `lax` (`portable`), whatever `impl` the model
was built or trained with: jaxcnn's oneDNN custom call runs only where jaxcnn's extension is loaded.
"""

from jaxcnn.export.onnx import export_onnx
from jaxcnn.export.predict import Prediction, Predictor
from jaxcnn.export.quantize import quantize_onnx
from jaxcnn.export.servable import (
    Servable,
    ServingInfo,
    ZooRecipe,
    from_checkpoint,
    from_model,
    from_workdir,
    from_zoo,
    portable,
)
from jaxcnn.export.stablehlo import export_stablehlo, load_stablehlo, metadata_path

__all__ = [
    "Prediction",
    "Predictor",
    "Servable",
    "ServingInfo",
    "ZooRecipe",
    "export_onnx",
    "export_stablehlo",
    "from_checkpoint",
    "from_model",
    "from_workdir",
    "from_zoo",
    "load_stablehlo",
    "metadata_path",
    "portable",
    "quantize_onnx",
]
