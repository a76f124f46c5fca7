"""Pictures of runs and models, drawn with matplotlib (headless-safe: the Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from jaxcnn.training.metrics import read_metrics  # noqa: E402


def plot_learning_curves(lines: list[dict]):
    """Loss and accuracy against step, train and test, from `metrics.jsonl` lines. Returns the Figure."""
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    for split, style in (("train", "-"), ("test", "o-")):
        points = [line for line in lines if line.get("split") == split]
        if not points:
            continue
        steps = [line["step"] for line in points]
        loss_axes.plot(steps, [line["loss"] for line in points], style, label=split, markersize=4)
        accuracy_axes.plot(steps, [100 * line["accuracy"] for line in points], style, label=split, markersize=4)
    loss_axes.set(xlabel="step", ylabel="cross-entropy loss", title="Loss")
    accuracy_axes.set(xlabel="step", ylabel="accuracy (%)", title="Accuracy")
    for axes in (loss_axes, accuracy_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    return figure


def save_learning_curves(workdir: str | os.PathLike) -> Path:
    """Draws `workdir/metrics.jsonl` into `workdir/plots/curves.png` and returns that path."""
    workdir = Path(workdir)
    out = workdir / "plots" / "curves.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    figure = plot_learning_curves(read_metrics(workdir / "metrics.jsonl"))
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
