"""Pure functions on arrays: the only place in jaxcnn that calls `jax.lax` convolution and pooling.

Layouts are channels-last: inputs `(*batch, *spatial, C)` with 1, 2 or 3 spatial dims after any number
of batch dims (none, one `N`, or several: Flax's convention), kernels `(*window, C_in // groups, C_out)`.
Every op checks its arguments in Python and raises a `ValueError`/`TypeError` naming the argument before
anything reaches XLA.

Types and shapes: annotations give the type (arrays in as `jax.typing.ArrayLike`, out as `jax.Array`);
each docstring's Args and Returns give the shape, one convention everywhere: a tuple of named dims as
jaxtyping names them, `*name` for any number of dims (`*batch`, `*spatial`), `...` for dims left unnamed,
a product or quotient where one dim follows from others (`C_in // groups`, `prod(window) * C`).
"""

from jaxcnn.functional._cpu_paths import CONV_IMPLS, MAX_POOL_IMPLS
from jaxcnn.functional.basic import batch_moments, batch_norm, dense, drop_path, dropout, layer_norm
from jaxcnn.functional.conv import (
    conv,
    conv_output_shape,
    conv_output_size,
    conv_param_count,
    convolve,
    extract_patches,
)
from jaxcnn.functional.conv_local import conv_local, conv_local_kernel_shape
from jaxcnn.functional.conv_transpose import conv_transpose, conv_transpose_output_size
from jaxcnn.functional.padding import PADDING_MODES
from jaxcnn.functional.pool import (
    adaptive_avg_pool,
    adaptive_max_pool,
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    min_pool,
    pool,
)

__all__ = [
    "CONV_IMPLS",
    "MAX_POOL_IMPLS",
    "PADDING_MODES",
    "adaptive_avg_pool",
    "adaptive_max_pool",
    "avg_pool",
    "batch_moments",
    "batch_norm",
    "conv",
    "conv_local",
    "conv_local_kernel_shape",
    "conv_output_shape",
    "conv_output_size",
    "conv_param_count",
    "conv_transpose",
    "conv_transpose_output_size",
    "convolve",
    "dense",
    "drop_path",
    "dropout",
    "extract_patches",
    "global_avg_pool",
    "global_max_pool",
    "layer_norm",
    "max_pool",
    "min_pool",
    "pool",
]
