"""Shared pytest configuration for the jaxcnn tests.

Eight CPU devices are simulated for the whole session (before jax is first imported), so the
data-parallel and pmap paths run on a machine without accelerators.
"""

import os

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8"]
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "references: checks of the numpy oracles in tests/references.py against PyTorch/SciPy"
    )
