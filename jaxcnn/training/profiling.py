"""`config.profile`: a `jax.profiler` trace of a few steps of a run, and the action that takes it.

It sits below `training.config`, which reads the section, so it imports nothing of the run: the action
reads `run.step` and `run.state` alone.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import jax

from jaxcnn._validate import Settings, integer


@dataclasses.dataclass(frozen=True)
class ProfileSettings(Settings):
    """`config.profile`: a `jax.profiler` trace of `steps` steps (0 = none) from step `start_step` on
    (after the first steps, which compile), written for TensorBoard's profile plugin under
    `WORKDIR/tensorboard/plugins/profile/`."""

    start_step: int = dataclasses.field(default=10, metadata={"resumable": True})
    steps: int = dataclasses.field(default=0, metadata={"resumable": True})

    def __post_init__(self):
        integer(self.start_step, "start_step", minimum=0)
        integer(self.steps, "steps", minimum=0)


class Profile:
    """An action (`training.actions.Action`'s calls): traces steps `start_step + 1` ..
    `start_step + steps` with `jax.profiler` into `log_dir`."""

    def __init__(self, settings: ProfileSettings, log_dir: Path):
        self.first, self.last, self.log_dir = (
            settings.start_step,
            settings.start_step + settings.steps,
            log_dir,
        )
        self.tracing = False

    def __call__(self, run: Any) -> None:  # a training.run.Run: this module sits below run.py
        if run.step == self.first and not self.tracing:
            jax.block_until_ready(run.state)
            jax.profiler.start_trace(str(self.log_dir))
            self.tracing = True
        elif run.step >= self.last and self.tracing:
            self.close(run.state)

    def end(self, run: Any) -> None:
        """Nothing: the trace stops at its last step, or when the run closes."""

    def close(self, state: Any = None) -> None:
        if self.tracing:
            if state is not None:
                jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.tracing = False
            logging.info("profile of steps %d-%d written to %s", self.first + 1, self.last, self.log_dir)
