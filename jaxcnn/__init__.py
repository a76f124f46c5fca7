"""jaxcnn: convolutional neural networks in JAX.

`jaxcnn.functional` holds the pure ops, `jaxcnn.nnx_layers` (Flax NNX) and `jaxcnn.layers` (Flax Linen)
the modules over them, `jaxcnn.models` the model zoo, `jaxcnn.training` the jitted training loop.
Importing jaxcnn changes no setting; `jaxcnn.configure_cpu()`, called first, sets XLA's CPU flag.
"""

from jaxcnn import functional, layers, models, nnx_layers
from jaxcnn.runtime import configure_cpu
from jaxcnn.summary import Summary, summary

__version__ = "0.1.0"
__all__ = [
    "Summary",
    "configure_cpu",
    "functional",
    "layers",
    "models",
    "nnx_layers",
    "summary",
    "__version__",
]
