"""jaxcnn: convolutional neural networks in JAX.

`jaxcnn.functional` holds the pure ops, `jaxcnn.layers` the Flax modules over them,
`jaxcnn.models` the model zoo, `jaxcnn.training` the jitted training loop.
"""

from jaxcnn import functional, layers, models
from jaxcnn.summary import Summary, summary

__version__ = "0.1.0"
__all__ = ["Summary", "functional", "layers", "models", "summary", "__version__"]
