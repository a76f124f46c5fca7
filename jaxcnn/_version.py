"""The version of jaxcnn, in one place: the package, its build (pyproject.toml) and the workdirs it marks."""

__version__ = "0.2.0"
