"""Classify image files with a trained model: a run's workdir or an exported StableHLO artifact.

    predictor = jaxcnn.export.Predictor.load("runs/lenet5")        # or "lenet5.stablehlo"
    for prediction in predictor.predict_files(["shoe.png", "photos/"], top=3):
        print(prediction.path, prediction.top)                      # [("Sneaker", 0.93), ...]

Images are read as the run's data pipeline reads an image folder (`data.load_folder`: converted to its
channels, resized to its square size) and normalized with its statistics.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import jax
import numpy as np

from jaxcnn._validate import integer
from jaxcnn.data import UnreadableImageError, normalize
from jaxcnn.data.folder import IMAGE_SUFFIXES, ImageFiles
from jaxcnn.export.servable import DTYPES, ServingInfo, from_workdir
from jaxcnn.export.stablehlo import load_stablehlo, metadata_path


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's `top` classes as `(class name, probability)`, most probable first; or the `error` that
    kept it from being read (and no classes)."""

    path: str
    top: tuple[tuple[str, float], ...] = ()
    error: str = ""


def image_paths(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """`paths` with each folder replaced by the image files under it (by suffix, sorted).

    Raises:
      FileNotFoundError: a path that does not exist.
    """
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such image file or folder: {os.fspath(path)}")
    return found


@dataclasses.dataclass(frozen=True)
class Predictor:
    """`logits(images)` of uint8 images `(N, H, W, C)`, and the `ServingInfo` that says what they mean."""

    logits: Callable[[np.ndarray], jax.Array]
    info: ServingInfo

    @classmethod
    def load(cls, source: str | os.PathLike) -> Predictor:
        """From a run's workdir (a folder with `config.json`) or a StableHLO artifact with its metadata.

        Raises:
          ValueError: neither, or an artifact whose input normalization is unknown.
        """
        source = Path(source)
        if source.is_dir():
            servable = from_workdir(source)
            return cls(jax.jit(servable.forward(raw_images=True)), servable.info)
        if not (source.is_file() and metadata_path(source).is_file()):
            raise ValueError(
                f"{os.fspath(source)!r} is neither a run's workdir nor an exported artifact with its "
                f"{metadata_path(source).name} beside it"
            )
        exported, info = load_stablehlo(source)
        if info.raw_images:
            return cls(exported.call, info)
        if not (info.mean and info.std):
            raise ValueError(f"{os.fspath(source)!r} was exported without its normalization (mean and std)")
        dtype = DTYPES[info.dtype]
        return cls(lambda images: exported.call(normalize(images, info.mean, info.std).astype(dtype)), info)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Softmax of the logits, `(N, classes)`, batch by batch where the artifact's batch is fixed."""
        batch = self.info.batch or len(images)
        chunks = []
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            padded = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            chunks.append(np.asarray(jax.nn.softmax(self.logits(padded)))[: len(chunk)])
        return np.concatenate(chunks)

    def predict_files(
        self, paths: Sequence[str | os.PathLike], *, top: int = 5, batch_size: int = 64
    ) -> Iterator[Prediction]:
        """A `Prediction` per image file of `paths` (folders: every image under them), in order; files that
        cannot be read as images give their error instead.

        Raises:
          ValueError: `top` or `batch_size` below 1, or a model of non-square input (what images are
            resized to is a square).
          FileNotFoundError: a path that does not exist.
        """
        integer(top, "top", minimum=1)
        integer(batch_size, "batch_size", minimum=1)
        height, width, channels = self.info.input_shape
        if height != width:
            raise ValueError(f"images are resized to a square; this model takes {height}x{width}")
        files = image_paths(paths)
        images = ImageFiles(files, "L" if channels == 1 else "RGB", self.info.input_shape, height, "raise")
        names = self.info.class_names
        for start in range(0, len(files), batch_size):
            readable, predictions = [], {}
            for row in range(start, min(start + batch_size, len(files))):
                try:
                    readable.append((row, images[row]))
                except UnreadableImageError as error:
                    predictions[row] = Prediction(os.fspath(files[row]), error=str(error))
            if readable:
                probabilities = self.probabilities(np.stack([image for _, image in readable]))
                for (row, _), p in zip(readable, probabilities):
                    best = np.argsort(-p, kind="stable")[:top]
                    classes = tuple((names[k] if k < len(names) else str(k), float(p[k])) for k in best)
                    predictions[row] = Prediction(os.fspath(files[row]), classes)
            yield from (predictions[row] for row in sorted(predictions))
