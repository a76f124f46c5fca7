"""`Run`: a built training run, what the loop and its actions read (`RunSpec`, fixed once built) and the
state they move. `training.build_run` makes one; `training.loop.train` steps it.

The actions and the build both import this module, and it imports neither.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jaxcnn import data
from jaxcnn._files import strict_json
from jaxcnn.training import steps
from jaxcnn.training.checkpoint import Checkpoints
from jaxcnn.training.evaluation import evaluate
from jaxcnn.training.metrics import MetricWriter, logged_training, read_metrics
from jaxcnn.training.result import RunResult
from jaxcnn.training.state import TrainState
from jaxcnn.training.workdir import write_file, writing


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run is, fixed once built: its data, compiled functions, length and batch sizes."""

    workdir: Path
    model_name: str
    dataset_name: str
    train_data: data.ArrayDataset
    test_data: data.ArrayDataset
    strategy: Any
    train_fn: Any  # (state, metric_sums, packed batches of a call) -> (state, metric_sums), compiled
    eval_fn: Any  # (state, batch) -> metric sums, compiled for the strategy
    start_step: int
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    eval_batch_size: int
    learning_rate: Callable[[int], float]  # of a step
    earlier_seconds: float  # training time of the segments before a resume, as of their last checkpoint
    steps_per_call: int = 1  # optimizer steps per call of `train_fn` (`data.loader.call_steps`)

    @property
    def label(self) -> str:
        return f"{self.model_name} on {self.dataset_name}"


@dataclasses.dataclass(eq=False)
class Run:
    """A training run: its `spec`, what it holds open until `close` (batches, checkpoints, metric
    files, the workdir's lock), and what changes as it goes.

    The loop replaces `state` and `metric_sums` after each call and counts `step` (steps done); actions
    record `train_summary`, `test_summary` and `examples_per_sec` for the result.
    """

    spec: RunSpec
    batches: Any  # the batches from `spec.start_step` on, as `strategy.put_batch` places them
    checkpoints: Checkpoints
    writer: MetricWriter
    lock: contextlib.AbstractContextManager  # the workdir's (process 0), held until `close`
    state: TrainState
    metric_sums: steps.Metrics
    step: int
    actions: list = dataclasses.field(default_factory=list)
    train_summary: dict | None = None
    test_summary: dict | None = None
    examples_per_sec: float = float("nan")
    started: float = dataclasses.field(default_factory=time.perf_counter)
    paused_seconds: float = 0.0  # spent by actions that stop training (evaluations, checkpoints)
    saved_step: int = -1

    @property
    def is_writer(self) -> bool:
        """Process 0 writes the metrics, plots and result; every process takes part in checkpoints."""
        return jax.process_index() == 0

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Time spent in the block is not training time for the throughput (`paused_seconds`)."""
        jax.block_until_ready(self.state)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - started

    def seconds(self) -> float:
        """Training time so far, over every segment of the run."""
        return self.spec.earlier_seconds + time.perf_counter() - self.started

    def save_checkpoint(self, unless_saved: bool = False) -> None:
        """A checkpoint of this step: state, metric sums and data position (refused for parameters that
        are not finite: the previous checkpoint stays the newest)."""
        if unless_saved and self.saved_step == self.step:
            return
        check_finite(self)
        spec = self.spec
        position = {
            "step": self.step,
            "epoch": self.step // spec.steps_per_epoch,
            "batch": self.step % spec.steps_per_epoch,
            "total_steps": spec.total_steps,
            "seconds": self.seconds(),
        }
        host = spec.strategy.host_state
        with writing(self.checkpoints.directory):  # a file system turned read-only, say
            self.checkpoints.save(host(self.state), host(self.metric_sums), position)
        self.saved_step = self.step

    def result(self) -> RunResult:
        """The run's result, written to `WORKDIR/result.json` (by process 0, last: it marks the run
        finished); the test split is evaluated if no evaluation ran in this segment."""
        spec = self.spec
        if self.test_summary is None:
            self.test_summary = evaluate(
                spec.eval_fn, self.state, spec.test_data, spec.eval_batch_size, spec.strategy
            )
        if self.train_summary is None:  # nothing trained in this segment: its last window is in metrics.jsonl
            training = logged_training(read_metrics(spec.workdir / "metrics.jsonl"))
        else:
            training = {**self.train_summary, "examples_per_sec": self.examples_per_sec}
        result = RunResult(
            model=spec.model_name,
            dataset=spec.dataset_name,
            test_loss=self.test_summary["loss"],
            test_accuracy=self.test_summary["accuracy"],
            train_loss=training["loss"],
            train_accuracy=training["accuracy"],
            steps=spec.total_steps,
            epochs=round(spec.total_steps / spec.steps_per_epoch, 2),
            resumed_from=spec.start_step,
            seconds=self.seconds(),
            examples_per_sec=training["examples_per_sec"],
            workdir=str(spec.workdir),
            ensemble_test_accuracy=self.test_summary.get("ensemble_accuracy"),
            test_top5_accuracy=self.test_summary.get("top5_accuracy"),
            class_names=list(spec.train_data.class_names),
        )
        if self.is_writer:
            write_file(spec.workdir / "result.json", strict_json(dataclasses.asdict(result), indent=2) + "\n")
        return result

    def _close_checkpoints(self) -> None:
        """Waits for the last save, which may fail on the file system as `save_checkpoint` does."""
        with writing(self.checkpoints.directory):
            self.checkpoints.close()

    def close(self, raising: bool = True) -> None:
        """Stops the batch thread, closes the checkpoints (waiting for the last save) and metric files, and
        unlocks the workdir: each whatever the others raise. The first error is raised if `raising`, else
        logged, as the others are (`close_all`): an error on its way out is the run's to report."""
        close_all(
            [
                ("the batch pipeline", self.batches.close),
                ("the checkpoints", self._close_checkpoints),
                ("the metric files", self.writer.close),
                ("the workdir's lock", lambda: self.lock.__exit__(None, None, None)),
            ],
            raising=raising,
        )


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def check_finite(run: Run, loss: float | None = None) -> None:
    """FloatingPointError if the window's `loss` (None: not measured) or the parameters are not finite,
    naming the newest checkpoint and what vouches for it (or saying that there is none): saved by this
    run (its parameters checked finite first) or restored with matching checksums; one restored without
    checksums may be what went wrong."""
    newest = run.checkpoints.newest()
    kept = "no checkpoint has been saved yet"
    if newest is not None and run.checkpoints.verified(newest[0]):
        kept = (
            f"the newest checkpoint, step {newest[0]}, saved with finite parameters, is kept in {newest[1]}"
        )
    elif newest is not None:
        kept = (
            f"the newest checkpoint, step {newest[0]}, is kept in {newest[1]}, unverified: an older jaxcnn "
            "saved it without checksums, so it may be damaged (if the run stops here again, move it aside "
            "to resume from an earlier one)"
        )
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {loss} by step {run.step}; {kept} "
            "(config.optim.skip_nonfinite_steps skips such steps instead)"
        )
    if not bool(_all_finite(run.state.params)):  # computed where the parameters are: one value comes back
        raise FloatingPointError(
            f"the parameters became non-finite by step {run.step}; they were not saved, and {kept}"
        )


def close_all(closers: Sequence[tuple[str, Callable[[], object]]], *, raising: bool = True) -> None:
    """Calls every `(what, close)` of `closers`, whatever the others raise. The first error is raised
    at the end if `raising` (no other error is on its way out: the run's own error is the one to report);
    every other one is logged in a line."""
    errors = []
    for what, close in closers:
        try:
            close()
        except Exception as error:  # noqa: BLE001 - reported below: closing goes on
            errors.append((what, error))
    for what, failure in errors[1:] if raising else errors:
        logging.warning("closing %s failed: %s: %s", what, type(failure).__name__, failure)
    if raising and errors:
        raise errors[0][1]
