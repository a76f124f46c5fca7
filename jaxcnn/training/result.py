"""What a run reports when it ends: `RunResult`, kept as `WORKDIR/result.json`."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import types
import typing


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run after saving a checkpoint; the same command resumes it."""

    def __init__(self, step: int, signum: int, workdir: str):
        self.step, self.signum = step, signum
        super().__init__(
            f"{signal.Signals(signum).name} at step {step}: checkpoint saved in {workdir}; "
            "run the same command again to resume"
        )


class DataWorkerError(RuntimeError):
    """A data worker process died (killed, out of memory); the run saved a checkpoint of the step it had
    reached, and the same command resumes it."""

    def __init__(self, step: int, workdir: str, reason: str):
        self.step = step
        super().__init__(
            f"a data worker process died at step {step} ({reason}); checkpoint saved in {workdir}; run the "
            "same command again to resume"
        )


def _shown(value: float | None, spec: str) -> str:
    """`value` formatted by `spec`, or "n/a" where it was not measured (None, NaN: a window whose every
    step was skipped, a loss that overflowed)."""
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a finished run reports. A metric that was not measured, or not finite, is None in
    `result.json` (strict JSON has no NaN) and "n/a" in `describe()`."""

    model: str
    dataset: str
    test_loss: float | None
    test_accuracy: float | None
    train_loss: float | None
    train_accuracy: float | None
    steps: int
    epochs: float
    resumed_from: int
    seconds: float  # wall time of training, summed over the segments of a resumed run
    examples_per_sec: float | None
    workdir: str
    ensemble_test_accuracy: float | None = None  # the averaged logits' accuracy (config.ensemble_size > 1)
    class_names: list[str] | None = None  # label k's name is the k-th (an image folder's subfolder names)
    test_top5_accuracy: float | None = None  # the label among the 5 largest logits (more than 5 classes)

    @classmethod
    def from_dict(cls, stored: dict) -> RunResult:
        """The result that `dataclasses.asdict` made `stored` (read back from `result.json`).

        Raises:
          ValueError: a field is missing or unknown. TypeError: a field has the wrong type.
        """
        fields = {field.name: field for field in dataclasses.fields(cls)}
        required = {name for name, field in fields.items() if field.default is dataclasses.MISSING}
        if not required <= stored.keys() <= fields.keys():
            missing, unknown = sorted(required - stored.keys()), sorted(stored.keys() - fields.keys())
            raise ValueError(f"fields missing: {missing}, unknown: {unknown}")
        hints = typing.get_type_hints(cls)
        for name, value in stored.items():
            hint = hints[name]
            kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
            kinds = tuple(typing.get_origin(kind) or kind for kind in kinds)  # list[str] -> list
            if not isinstance(value, kinds + ((int,) if float in kinds else ())) or isinstance(value, bool):
                raise TypeError(f"{name} is {value!r}, not {fields[name].type}")
        return cls(**stored)

    def describe(self) -> str:
        """A few lines for a person: the accuracy, how long it took and where the files are."""
        minutes, seconds = divmod(round(self.seconds), 60)
        resumed = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        top5 = "" if self.test_top5_accuracy is None else f", top-5 {_shown(self.test_top5_accuracy, '.2%')}"
        lines = [
            f"{self.model} on {self.dataset}: test accuracy {_shown(self.test_accuracy, '.2%')}{top5} (loss "
            f"{_shown(self.test_loss, '.4f')}) after {self.epochs:g} epochs ({self.steps} steps{resumed})",
            f"  last training window: accuracy {_shown(self.train_accuracy, '.2%')}, loss "
            f"{_shown(self.train_loss, '.4f')}; {minutes}m {seconds:02d}s, "
            f"{_shown(self.examples_per_sec, ',.0f')} examples/s",
            f"  metrics:     {os.path.join(self.workdir, 'metrics.jsonl')}",
            f"  checkpoints: {os.path.join(self.workdir, 'checkpoints')}",
            f"  curves:      {os.path.join(self.workdir, 'plots', 'curves.png')}",
        ]
        if self.ensemble_test_accuracy is not None:
            lines.insert(
                1,
                f"  ensemble test accuracy {_shown(self.ensemble_test_accuracy, '.2%')} (averaged logits; "
                "the accuracy above is the members' mean)",
            )
        return "\n".join(lines)
