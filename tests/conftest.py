"""Shared pytest configuration for the jaxcnn tests.

Eight CPU devices are simulated for the whole session (before jax is first imported), so the
data-parallel and pmap paths run on a machine without accelerators, and `jaxcnn.configure_cpu` makes
its settings (XLA's CPU flag, malloc's reuse) as the entry points do.

XLA's persistent compilation cache is shared by the pytest-xdist workers and every subprocess the
tests start (training scripts, notebooks, multi-process runs): each of them would otherwise compile
the same programs again, and compiling is most of this suite's time. Its keys include the JAX
version and the XLA flags, so a stale cache is never used. It has no size limit: with one, JAX scans
the whole directory under a lock at every write, slow with the thousands of small entries this suite
writes. An entry read while another process writes it fails to decompress; JAX then warns and
compiles it again.
"""

import os
from pathlib import Path

import pytest

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".pytest_cache" / "jax")
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # eager ops' programs too
# pytest-xdist runs a worker per core, and each worker's oneDNN convolutions run an OpenMP team of a thread
# per core: spinning (GNU OpenMP's default), the teams of two workers wait on each other's cores. Passive
# waiting gives the core back (the suite ran 9.6 min instead of 17.4 here, though with a warmer cache).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from jaxcnn.runtime import configure_cpu  # noqa: E402 (after the flags above, before JAX's backend starts)

configure_cpu()  # as the entry points do; the subprocesses inherit its XLA flag (not malloc's settings)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "references: checks of the numpy oracles in tests/references.py against PyTorch/SciPy"
    )


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    """The notebooks are marked slow (the marker's meaning: they run end to end, 15-30 s each), and the slow
    tests run first, the rest after them in their order: pytest-xdist's `worksteal` (pyproject's addopts)
    then evens the workers' queues out with the short tests, instead of one worker starting a long test
    while the other has nothing left to do."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
