"""jaxcnn's optional C++ extension: oneDNN's convolutions as an XLA FFI handler.

`jaxcnn/functional/csrc/onednn_conv.cc`, built beside it as the C library `libjaxcnn_onednn.so`
and loaded by `jaxcnn/functional/_onednn.py` through ctypes; everything else about the package is in
pyproject.toml. On Linux x86-64 pip installs the build requirements that give the headers (jaxlib's XLA
FFI headers, the onednn-devel-cpu-gomp wheel with oneDNN's and the library to link against). The
extension is optional: without a C++ compiler, on another platform or when the headers are missing, the
install goes on without it and jaxcnn runs XLA's convolutions. After editing the C++, `.venv/bin/pip install
-e .` rebuilds it in place (pip sets up the build requirements in a temporary environment).
"""

from __future__ import annotations

import importlib.metadata
import platform
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildLibrary(build_ext):
    """Builds the handler as a plain `.so` in `csrc/`, a folder that is no package: named as an extension
    module (`*.cpython-311-*.so`) beside the modules, it would be imported as one by the tools that import
    every module of a package (API doc generators, import checkers), and fail: it is no Python module."""

    def get_ext_filename(self, fullname: str) -> str:
        return str(Path(*fullname.split("."))) + ".so"


def _installed(distribution: str, file: str) -> Path:
    """Where a distribution installed `file` (its trailing path components)."""
    dist = importlib.metadata.distribution(distribution)
    for path in dist.files or ():
        if Path(str(path)).parts[-len(Path(file).parts) :] == Path(file).parts:
            return Path(dist.locate_file(path)).resolve()
    raise FileNotFoundError(f"{file} is not in the {distribution} package")


def onednn_extension() -> list[Extension]:
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return []
    try:
        import jaxlib  # a build requirement: its include/ has the XLA FFI headers

        onednn_headers = _installed("onednn-devel-cpu-gomp", "oneapi/dnnl/dnnl.hpp").parents[2]
        onednn_library = _installed("onednn-cpu-gomp", "libdnnl.so.3").parent
    except (ImportError, importlib.metadata.PackageNotFoundError, FileNotFoundError) as error:
        print(f"jaxcnn: building without the oneDNN extension: {error}")
        return []
    headers = [Path(jaxlib.__file__).parent / "include", onednn_headers]
    return [
        Extension(
            "jaxcnn.functional.csrc.libjaxcnn_onednn",  # BuildLibrary: csrc/libjaxcnn_onednn.so
            sources=["jaxcnn/functional/csrc/onednn_conv.cc"],
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O2",
                "-g0",
                "-fvisibility=hidden",
                *(f"-isystem{h}" for h in headers),
            ],
            library_dirs=[str(onednn_library)],
            libraries=["dnnl", "gomp"],
            optional=True,  # a failed build leaves jaxcnn on XLA's paths, it does not fail the install
        )
    ]


setup(ext_modules=onednn_extension(), cmdclass={"build_ext": BuildLibrary})
