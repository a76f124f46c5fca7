"""Process-wide settings that entry points make before JAX starts; importing jaxcnn makes none of them.

    import jaxcnn
    jaxcnn.configure_cpu()   # first thing in a script or notebook, before any JAX computation

jaxlib 0.10 hands CPU convolutions (all but tiny ones) to YNNPACK, which runs each on one thread: on
2 cores XLA's own convolution is twice as fast (128x14x14x64 -> 64, 3x3: 13.3 ms vs 6.7 ms; both 13 ms
on one core). YNNPACK's reductions are single-threaded too, and a reduction fusion also takes in pooling
windows and bias gradients: simple_cnn's train step (gradient of the loss, batch 128, 2-core AMD EPYC)
took 55-61 ms with them on YNNPACK and 29-32 ms without. `configure_cpu` keeps YNNPACK for matrix
products only.
`experiments/*.py`, `python -m jaxcnn` and the test suite call it; a notebook calls it in its first cell.
"""

from __future__ import annotations

import os

import jaxlib.version
from jax._src import xla_bridge

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_DOTS_ONLY = "individual_dot"
# The jaxlib releases measured to send convolutions to YNNPACK by default, with the default above, as a
# half-open range of (major, minor): 0.10.x. Others are left alone: XLA aborts on a flag it does not know,
# and their default set may differ.
YNN_CONVOLUTION_JAXLIBS = ((0, 10), (0, 11))


def configure_cpu() -> str | None:
    """Adds `--xla_cpu_experimental_ynn_fusion_type=individual_dot` to XLA_FLAGS: XLA's own
    multi-threaded convolutions and reductions instead of single-threaded YNNPACK on CPU.

    Changes nothing when JAX's backend has already started (XLA read the variable then: call this first),
    when XLA_FLAGS names the flag already (your choice stands; jaxlib's default is
    `individual_dot,individual_convolution,reduce`), or on jaxlib releases other than 0.10.x.

    Returns:
      The flag it added, or None when it changed nothing.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    low, high = YNN_CONVOLUTION_JAXLIBS
    if YNN_FLAG in flags or not low <= jaxlib.version.__version_info__[:2] < high:
        return None
    if xla_bridge.backends_are_initialized():
        return None
    added = f"{YNN_FLAG}={YNN_DOTS_ONLY}"
    os.environ["XLA_FLAGS"] = f"{flags} {added}".strip()
    return added


def xla_cpu_convolutions_threaded() -> bool:
    """Whether XLA_FLAGS keeps CPU convolutions on XLA's own (multi-threaded) implementation.

    XLA reads the variable once, when its backend starts, so this describes the running process as long
    as the variable is not changed afterwards.
    """
    values = [
        flag.partition("=")[2]
        for flag in os.environ.get("XLA_FLAGS", "").split()
        if flag.startswith(YNN_FLAG + "=")
    ]
    return bool(values) and "individual_convolution" not in values[-1].split(",")
