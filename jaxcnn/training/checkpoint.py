"""Atomic, resumable checkpoints with Orbax.

A checkpoint holds everything a run needs to continue bit-identically: the train state
(step, params, optimizer state, BatchNorm statistics, RNG), the metric sums since the last
log line, and a small JSON record of the data position and the training time so far. Orbax
writes each step to a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxcnn.training.state import TrainState

_STATE_FIELDS = ("step", "params", "opt_state", "batch_stats", "rng")


class CheckpointError(RuntimeError):
    """No usable checkpoint in a directory that has some."""


def _state_tree(state: TrainState) -> dict[str, Any]:
    fields = _STATE_FIELDS + (("ema_params",) if state.ema_params is not None else ())
    return {field: getattr(state, field) for field in fields}


class Checkpoints:
    """The checkpoints of one run: `save` every so often, `restore_latest` on start."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        self._manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, state: TrainState, metrics: Any, position: dict[str, float]) -> None:
        """Saves at `state.step` (asynchronously; the next save or `close` waits for it)."""
        step = int(jax.device_get(state.step))
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_state_tree(state)),
                metric_sums=ocp.args.StandardSave(metrics),
                position=ocp.args.JsonSave(position),
            ),
            force=True,
        )

    def restore_latest(self, template: TrainState, template_metrics: Any):
        """The newest readable checkpoint as `(state, metrics, position)`, or None if there is none.

        A checkpoint that fails to load is skipped with a warning naming it; if all fail,
        `CheckpointError` names the directory.
        """
        steps = self.steps()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (_state_tree(template), template_metrics))
        for step in reversed(steps):
            try:
                restored = self._manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract[0]),
                        metric_sums=ocp.args.StandardRestore(abstract[1]),
                        position=ocp.args.JsonRestore(),
                    ),
                )
            except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is skipped
                logging.warning(
                    "Skipping unreadable checkpoint %s: %s: %s",
                    os.path.join(self.directory, str(step)),
                    type(error).__name__,
                    error,
                )
                continue
            return template.replace(**restored["state"]), restored["metric_sums"], dict(restored["position"])
        if steps:
            raise CheckpointError(
                f"none of the checkpoints {steps} in {self.directory} could be read; "
                "remove that directory (or use a new --workdir) to start the run afresh"
            )
        return None

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
