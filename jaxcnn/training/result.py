"""What a run reports when it ends: `RunResult`, kept as `WORKDIR/result.json`."""

from __future__ import annotations

import dataclasses
import os
import signal


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after saving a checkpoint; the same command resumes it."""

    def __init__(self, step: int, signum: int, workdir: str):
        self.step, self.signum = step, signum
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: checkpoint saved in {workdir}; "
            "run the same command again to resume"
        )


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a finished run reports."""

    model: str
    dataset: str
    test_loss: float
    test_accuracy: float
    train_loss: float
    train_accuracy: float
    steps: int
    epochs: float
    resumed_from: int
    seconds: float  # wall time of training, summed over the segments of a resumed run
    examples_per_sec: float
    workdir: str
    ensemble_test_accuracy: float | None = None  # the averaged logits' accuracy (config.ensemble_size > 1)
    class_names: list[str] | None = None  # label k's name is the k-th (an image folder's subfolder names)

    def describe(self) -> str:
        """A few lines for a person: the accuracy, how long it took and where the files are."""
        minutes, seconds = divmod(round(self.seconds), 60)
        resumed = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        lines = [
            f"{self.model} on {self.dataset}: test accuracy {self.test_accuracy:.2%} "
            f"(loss {self.test_loss:.4f}) after {self.epochs:g} epochs ({self.steps} steps{resumed})",
            f"  last training window: accuracy {self.train_accuracy:.2%}, loss {self.train_loss:.4f}; "
            f"{minutes}m {seconds:02d}s, {self.examples_per_sec:,.0f} examples/s",
            f"  metrics:     {os.path.join(self.workdir, 'metrics.jsonl')}",
            f"  checkpoints: {os.path.join(self.workdir, 'checkpoints')}",
            f"  curves:      {os.path.join(self.workdir, 'plots', 'curves.png')}",
        ]
        if self.ensemble_test_accuracy is not None:
            lines.insert(
                1,
                f"  ensemble test accuracy {self.ensemble_test_accuracy:.2%} (averaged logits; "
                "the accuracy above is the members' mean)",
            )
        return "\n".join(lines)
