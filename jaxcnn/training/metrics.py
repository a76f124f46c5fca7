"""Run metrics: `metrics.jsonl` (one JSON object a line) and TensorBoard events, from process 0."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from pathlib import Path

from jaxcnn._files import strict_json
from jaxcnn.training.workdir import write_file, writing


class MetricWriter:
    """Writes `{"step", "split", ...}` lines to `workdir/metrics.jsonl` and the same scalars as
    TensorBoard events under `workdir/tensorboard/` (`split/name` tags).

    On resume (`resume_step`), what was written past that step (after the checkpoint the run
    resumes from) is dropped, so the files end as those of an uninterrupted run.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        kept = (
            [line for line in read_metrics(self.path) if line["step"] <= resume_step] if resume_step else []
        )
        write_file(self.path, "".join(strict_json(line) + "\n" for line in kept))
        self._tensorboard_dir = Path(workdir) / "tensorboard"
        with writing(self._tensorboard_dir):
            self._tensorboard = _summary_writer_class()(
                str(self._tensorboard_dir), purge_step=resume_step or None
            )

    def write(self, step: int, split: str, **values: float | None) -> None:
        """A row of `values` at `step` (a value that is None or not finite is `null`).

        Raises:
          WorkdirError: the file system refused the write (a full disk, one turned read-only).
        """
        if self._tensorboard is None:  # not enabled
            return
        with writing(self.path), self.path.open("a") as f:
            f.write(strict_json({"step": step, "split": split, **values}) + "\n")
        for name, value in values.items():
            # None: not measured (a window whose every step was skipped has no loss); NaN: overflowed
            if value is not None and math.isfinite(value):
                self._tensorboard.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        """Flushes the TensorBoard events. Raises WorkdirError as `write`."""
        if self._tensorboard is not None:
            with writing(self._tensorboard_dir):
                self._tensorboard.close()


def _summary_writer_class():
    """tensorboardX's `SummaryWriter`, imported here (only process 0 needs it) without PyTorch.

    tensorboardX's writer imports torch when it can, only for its type hints (a torch tensor is
    still converted by its type's name): ~3 s of every training process's start where torch is
    installed. While it imports, a `None` in `sys.modules` makes `import torch` raise the
    ImportError tensorboardX expects; a torch already imported is left as it is.
    """
    blocking = "torch" not in sys.modules
    if blocking:
        sys.modules["torch"] = None
    try:
        from tensorboardX import SummaryWriter
    finally:
        if blocking:
            del sys.modules["torch"]
    return SummaryWriter


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a `metrics.jsonl` (a missing file has none).

    A line that is not a row is skipped with a warning, and the rows after it are kept: the last
    line, unterminated, is one a crash cut short; another is damage.
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")  # a garbled byte costs only its line
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        row = _row(line)
        if row is not None:
            rows.append(row)
        elif number == len(lines) and not text.endswith("\n"):
            logging.warning("%s: dropped its torn last line %d: %.80r", path, number, line)
        elif line.strip():
            logging.warning("%s: skipped unreadable line %d: %.80r", path, number, line)
    return rows


def _row(line: str) -> dict | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    is_row = isinstance(row, dict) and isinstance(row.get("step"), int) and isinstance(row.get("split"), str)
    return row if is_row else None


def logged_training(rows: list[dict]) -> dict:
    """From `metrics.jsonl` rows: the last training window's `loss` and `accuracy`, and the
    `examples_per_sec` of all logged windows together; NaN where nothing was logged."""
    train = [row for row in rows if row["split"] == "train"]
    # A window of n steps at v examples/s took n·B/v seconds: together, Σn·B / Σ(n·B/v) examples/s.
    steps, seconds_over_batch, previous = 0, 0.0, 0
    for row in train:
        speed = row.get("examples_per_sec")
        if speed and math.isfinite(speed):  # NaN: a window of only a segment's first step (not timed)
            steps += row["step"] - previous
            seconds_over_batch += (row["step"] - previous) / speed
        previous = row["step"]
    last = train[-1] if train else {"loss": math.nan, "accuracy": math.nan}
    speed = steps / seconds_over_batch if steps else math.nan
    return {"loss": last["loss"], "accuracy": last["accuracy"], "examples_per_sec": speed}
