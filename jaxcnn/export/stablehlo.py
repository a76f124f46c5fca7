"""StableHLO artifacts (`jax.export`): one file that any JAX reads back and runs, without jaxcnn or Flax.

    exported = jax.export.deserialize(open("model.stablehlo", "rb").read())
    logits = exported.call(images)   # images (N, H, W, C) float32, normalized as model.json says

The weights are constants of the program; `model.json` beside it (`ServingInfo`) holds the class names,
input shape, dtype and normalization. The program is lowered for CPU and CUDA (and TPU) in one artifact,
for any batch size unless one is fixed.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxcnn._files import write_atomically
from jaxcnn._validate import choice, integer
from jaxcnn.export.servable import DTYPES, Servable, ServingInfo

PLATFORMS = ("cpu", "cuda", "tpu")
FORMAT = "stablehlo"


def metadata_path(artifact: str | os.PathLike) -> Path:
    """Where an artifact's `ServingInfo` is written: beside it, with the suffix `.json`."""
    return Path(artifact).with_suffix(".json")


def input_spec(info: ServingInfo) -> jax.ShapeDtypeStruct:
    """The artifact's input: `(batch or a symbolic "batch", H, W, C)` in its dtype, uint8 for raw images."""
    batch = info.batch if info.batch is not None else jax.export.symbolic_shape("batch")[0]
    dtype = jnp.uint8 if info.raw_images else DTYPES[info.dtype]
    return jax.ShapeDtypeStruct((batch, *info.input_shape), dtype)


def check_options(path: str | os.PathLike, batch: int | None, dtype: str) -> Path:
    """`path` as a Path, after the options every format shares are checked.

    Raises:
      ValueError: `batch` below 1, an unknown `dtype`, or a `path` whose metadata would overwrite it.
    """
    if batch is not None:
        integer(batch, "batch", minimum=1)
    choice(dtype, "dtype", DTYPES)
    path = Path(path)
    if path.suffix == ".json":
        raise ValueError(
            f"path {os.fspath(path)!r} ends in .json, the name of the metadata written beside it"
        )
    return path


def write_artifact(path: Path, payload: bytes | bytearray, info: ServingInfo) -> None:
    """Writes the artifact and its metadata, each atomically; the artifact is removed if its metadata cannot
    be written, so no artifact is left without it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, payload)
    try:
        write_atomically(metadata_path(path), info.to_json())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def export_stablehlo(
    servable: Servable,
    path: str | os.PathLike,
    *,
    batch: int | None = None,
    dtype: str = "float32",
    raw_images: bool = False,
    platforms: tuple[str, ...] = PLATFORMS,
) -> ServingInfo:
    """Serializes `servable`'s model with `jax.export` to `path`, and its `ServingInfo` beside it.

    Args:
      batch: a fixed batch size; None (default): any (a symbolic dimension).
      dtype: "float32" or "bfloat16": the input's dtype and the weights' (logits are float32 either way).
      raw_images: the artifact takes uint8 pixels `(N, H, W, C)` and normalizes them as the run's data
        pipeline does.
      platforms: those the program is lowered for.

    Returns:
      The `ServingInfo` written beside the artifact.

    Raises:
      ValueError: a bad option (named), `raw_images` for a model whose normalization is unknown, or a model
        that lowers to a custom call no other program can run (nothing is written then).
    """
    path = check_options(path, batch, dtype)
    info = dataclasses.replace(servable.info, dtype=dtype, raw_images=raw_images, batch=batch, format=FORMAT)
    forward = jax.jit(servable.forward(dtype, raw_images))
    try:
        exported = jax.export.export(forward, platforms=platforms)(input_spec(info))
        payload = exported.serialize()
    except ValueError as error:
        if "custom call" not in str(error):
            raise
        raise ValueError(
            f"the model lowers to a custom call that a serialized program cannot hold ({error}); "
            "build its layers with impl='xla'"
        ) from None
    write_artifact(path, payload, info)
    return info


def load_stablehlo(path: str | os.PathLike) -> tuple[jax.export.Exported, ServingInfo]:
    """An artifact of `export_stablehlo` and its `ServingInfo`.

    Raises:
      FileNotFoundError: the artifact or its metadata is missing.
    """
    path = Path(path)
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    return exported, ServingInfo.from_json(metadata_path(path).read_text())
