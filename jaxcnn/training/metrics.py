"""`metrics.jsonl`: one JSON object a line, written by process 0 only."""

from __future__ import annotations

import json
import os
from pathlib import Path


class MetricWriter:
    """Appends `{"step", "split", ...}` lines to `workdir/metrics.jsonl`.

    On resume (`resume_step`), lines past that step, written after the checkpoint the run
    resumes from, are dropped, so the file ends as that of an uninterrupted run.
    """

    def __init__(self, workdir: str | os.PathLike, resume_step: int = 0, enabled: bool = True):
        self.path = Path(workdir) / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        kept = [line for line in read_metrics(self.path) if line["step"] <= resume_step] if resume_step else []
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(line) + "\n" for line in kept))
        os.replace(tmp, self.path)

    def write(self, step: int, split: str, **values: float) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, "split": split, **values}) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The lines of a `metrics.jsonl` (a missing file has none; a torn last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError:
            break
    return lines
