"""Shared pytest configuration for the jaxcnn tests (kept minimal on purpose)."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "references: checks of the numpy oracles in tests/references.py against PyTorch/SciPy"
    )
