"""jaxcnn: convolutional neural networks in JAX.

`jaxcnn.functional` holds the pure ops; `jaxcnn.nnx_layers` (Flax NNX) and `jaxcnn.layers` (Flax Linen) the
modules over them; `jaxcnn.models` the model zoo, written in NNX and usable from Linen; `jaxcnn.training`
builds a run from a config and runs it. Importing jaxcnn changes no environment variable and no global
setting: scripts and notebooks call `jaxcnn.configure_cpu()` first (XLA's threaded CPU code, malloc's reuse).
"""

from jaxcnn import functional, layers, models, nnx_layers
from jaxcnn._version import __version__
from jaxcnn.runtime import configure_cpu
from jaxcnn.summary import Summary, summary

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
