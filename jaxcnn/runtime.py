"""Process-wide settings that entry points make before JAX starts; importing jaxcnn makes none of them.

    import jaxcnn
    jaxcnn.configure_cpu()   # first thing in a script or notebook, before any JAX computation

Two settings, each measured on the 2-core AMD EPYC (batch 128, gradient of the loss):
- XLA's flags. jaxlib 0.10 hands CPU convolutions (all but tiny ones) to YNNPACK, which runs each on one
  thread: on 2 cores XLA's own convolution is twice as fast (128x14x14x64 -> 64, 3x3: 13.3 ms vs 6.7 ms;
  both 13 ms on one core). YNNPACK's reductions are single-threaded too, and a reduction fusion also
  takes in pooling windows and bias gradients: simple_cnn's step took 55-61 ms with them on YNNPACK and
  29-32 ms without. `configure_cpu` keeps YNNPACK for matrix products only.
- glibc's malloc. XLA's CPU runtime allocates a program's temporary buffer on every call (204 MB for
  resnet20's step); malloc maps an allocation that large afresh and unmaps it when freed, so the kernel
  zero-fills its ~50,000 pages on every step (137 ms of system time a step). With one arena, no mappings
  and no trimming, the freed buffer is reused: 0 page faults, the step 350-410 ms -> 250-267 ms.
`experiments/*.py`, `python -m jaxcnn` and the test suite call it; a notebook calls it in its first cell.
"""

from __future__ import annotations

import ctypes
import functools
import os

import jaxlib.version
from jax._src import xla_bridge

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNN_DOTS_ONLY = "individual_dot"
# The jaxlib releases measured to send convolutions to YNNPACK by default, with the default above, as a
# half-open range of (major, minor): 0.10.x. Others are left alone: XLA aborts on a flag it does not know,
# and their default set may differ.
YNN_CONVOLUTION_JAXLIBS = ((0, 10), (0, 11))
# mallopt's parameters (glibc's malloc.h) and the values that keep freed memory in the process.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
MALLOC_REUSE = {_M_ARENA_MAX: 1, _M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1}
MALLOC_REUSE_SETTING = "malloc: one arena, no mmap, no trimming"
# The environment variables by which a user tunes glibc's malloc: when one is set, their choice stands.
MALLOC_VARIABLES = (
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
)


def configure_cpu() -> list[str]:
    """Makes XLA's CPU backend run multi-threaded and reuse its memory: adds
    `--xla_cpu_experimental_ynn_fusion_type=individual_dot` to XLA_FLAGS (XLA's own multi-threaded
    convolutions and reductions instead of single-threaded YNNPACK), and has glibc's malloc keep freed
    memory for reuse (one arena, no mmap, no trimming: the process's resident memory stays at its peak).

    Changes nothing when JAX's backend has already started (XLA read the variable and started its threads
    then: call this first). Leaves the flag alone when XLA_FLAGS names it already (your choice stands;
    jaxlib's default is `individual_dot,individual_convolution,reduce`) or on jaxlib releases other than
    0.10.x, and malloc alone when a `MALLOC_*` or `GLIBC_TUNABLES` variable is set or the C library has no
    glibc `mallopt`.

    Returns:
      The settings it made: the flag it added and/or `MALLOC_REUSE_SETTING`; empty when none.
    """
    if xla_bridge.backends_are_initialized():
        return []
    return [setting for setting in (_add_ynn_flag(), _reuse_freed_memory()) if setting]


def _add_ynn_flag() -> str | None:
    flags = os.environ.get("XLA_FLAGS", "")
    low, high = YNN_CONVOLUTION_JAXLIBS
    if YNN_FLAG in flags or not low <= jaxlib.version.__version_info__[:2] < high:
        return None
    added = f"{YNN_FLAG}={YNN_DOTS_ONLY}"
    os.environ["XLA_FLAGS"] = f"{flags} {added}".strip()
    xla_cpu_convolutions_threaded.cache_clear()  # the backend has yet to start: XLA will read this
    return added


def _reuse_freed_memory() -> str | None:
    if "GLIBC_TUNABLES" in os.environ or any(v in os.environ for v in MALLOC_VARIABLES):
        return None
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (or no C library to load)
        return None
    # mallopt returns 1 on success. Setting the same values again changes nothing.
    if not all(mallopt(parameter, value) == 1 for parameter, value in MALLOC_REUSE.items()):
        return None
    return MALLOC_REUSE_SETTING


@functools.cache
def xla_cpu_convolutions_threaded() -> bool:
    """Whether XLA_FLAGS keeps CPU convolutions on XLA's own (multi-threaded) implementation.

    Read once, at the first call, and kept: XLA reads the variable once too, when its backend starts, which
    comes first where the rule asks (a convolution traced for the CPU backend), so a later change of the
    variable changes neither. `configure_cpu` has it read again when it sets the flag before the backend
    starts.
    """
    values = [
        flag.partition("=")[2]
        for flag in os.environ.get("XLA_FLAGS", "").split()
        if flag.startswith(YNN_FLAG + "=")
    ]
    return bool(values) and "individual_convolution" not in values[-1].split(",")
