"""The periodic work of a training run, one small action each: log, evaluate, checkpoint, show progress,
stop on a signal, profile. The loop (`training.loop.train`) calls every action of the run after each step
(`run.step` steps done); an action decides whether the step is its own (`due`).

`training.build_run` makes the actions the config asks for; a script adds its own by appending an `Action`
to `run.actions` (`experiments/train.py` adds the plot of the learning curves).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxcnn._validate import Settings, integer
from jaxcnn.training import steps
from jaxcnn.training.evaluation import evaluate
from jaxcnn.training.result import TrainingInterrupted

if TYPE_CHECKING:
    from jaxcnn.training.build import Run


class Action:
    """What the loop calls: after each step, after the last step, and at the end whatever happened."""

    def __call__(self, run: Run) -> None:
        """After each step."""

    def end(self, run: Run) -> None:
        """After the run's last step, before its result is made."""

    def close(self) -> None:
        """Last, also when the run failed or was interrupted."""


def due(run: Run, every: int) -> bool:
    """Whether `run.step` is one of every `every` steps, or the run's last."""
    return run.step % every == 0 or run.step == run.total_steps


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


class LogMetrics(Action):
    """Every `every` steps: the training metrics of the window since the last line (loss, accuracy,
    examples/s, learning rate) to `metrics.jsonl` and TensorBoard, and the window's sums back to zero.

    The throughput leaves out the first step of a segment (it compiles) and the time other actions
    spent (`run.paused_seconds`: evaluations, checkpoints). A loss or parameters that are not finite stop
    the run (`check_finite`).
    """

    def __init__(self, every: int):
        self.every = every
        self.window_start = self.window_steps = None
        self.steps_timed, self.seconds_timed = 0, 0.0

    def __call__(self, run: Run) -> None:
        if self.window_start is None:  # the segment's first step: compiled, so timed from here on
            jax.block_until_ready(run.metric_sums)
            self.window_start, self.window_steps, self.paused = time.perf_counter(), 0, run.paused_seconds
        else:
            self.window_steps += 1
        if not due(run, self.every):
            return
        sums = run.strategy.host_value(run.metric_sums)  # waits for the window's last step
        elapsed = time.perf_counter() - self.window_start - (run.paused_seconds - self.paused)
        summary = steps.summarize(sums)
        check_finite(run, summary["loss"])
        speed = self.window_steps * run.batch_size / elapsed if self.window_steps else None  # none timed
        self.steps_timed += self.window_steps
        self.seconds_timed += elapsed
        if self.seconds_timed:
            run.examples_per_sec = self.steps_timed * run.batch_size / self.seconds_timed
        run.train_summary = {**summary, "examples_per_sec": speed}
        extra = {"skipped_steps": int(sums["skipped"])} if "skipped" in sums else {}
        learning_rate = run.learning_rate(run.step - 1)  # that of the window's last update
        run.writer.write(
            run.step, "train", **summary, examples_per_sec=speed, learning_rate=learning_rate, **extra
        )
        if summary["loss"] is None:
            logging.warning("step %d: every step since the last log line was skipped (non-finite)", run.step)
        run.metric_sums = run.strategy.put_state(jax.tree.map(np.zeros_like, sums))  # `sums` is on the host
        self.window_start, self.window_steps, self.paused = time.perf_counter(), 0, run.paused_seconds


class Evaluate(Action):
    """Every `every` steps (and at the last): loss and accuracy on the test split, to `metrics.jsonl`."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, run: Run) -> None:
        if not due(run, self.every):
            return
        with run.pause():
            run.test_summary = evaluate(
                run.eval_fn, run.state, run.test_data, run.eval_batch_size, run.strategy
            )
        run.writer.write(run.step, "test", **run.test_summary)
        logging.info(
            "step %d: test loss %.4f, accuracy %.2f%%",
            run.step,
            run.test_summary["loss"],
            100 * run.test_summary["accuracy"],
        )


class SaveCheckpoint(Action):
    """Every `every` steps (and at the last): a checkpoint of the state, the window's metric sums and
    the data position, unless the parameters are not finite (`check_finite`)."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, run: Run) -> None:
        if due(run, self.every):
            with run.pause():
                run.save_checkpoint()


class ProgressBar(Action):
    """A tqdm bar over the run's steps, showing the last logged loss, accuracy and speed; on a terminal
    only, else one log line per logged window instead."""

    def __init__(self, run: Run):
        self.bar = tqdm(
            total=run.total_steps,
            initial=run.step,
            desc=run.label,
            unit="step",
            disable=None if run.is_writer else True,  # None: only on a terminal
            dynamic_ncols=True,
        )
        self.shown = None

    def __call__(self, run: Run) -> None:
        self.bar.update(1)
        summary = run.train_summary
        if summary is self.shown or summary is None or summary["loss"] is None:
            return
        self.shown = summary
        # None: the window held a compilation or a pause, so it was not timed
        speed = "-" if summary["examples_per_sec"] is None else f"{summary['examples_per_sec']:,.0f}"
        if not self.bar.disable:
            self.bar.set_postfix(loss=f"{summary['loss']:.4f}", acc=f"{summary['accuracy']:.2%}", ex_s=speed)
        elif run.is_writer:
            logging.info(
                "step %d/%d: loss %.4f, accuracy %.2f%%, %s examples/s",
                run.step,
                run.total_steps,
                summary["loss"],
                100 * summary["accuracy"],
                speed,
            )

    def close(self) -> None:
        self.bar.close()


class StopOnSignal(Action):
    """SIGTERM or SIGINT stops the run at the next step, after a checkpoint: `TrainingInterrupted`.

    Several processes stop together, each saving the same step. A SIGTERM on any of them (a preemption
    notice) goes through JAX's preemption service when the group runs one (`jax.distributed`'s
    default): it notices the signal itself, tells every process, and picks the step all save at,
    checked at each step without a collective (`multihost_utils.reached_preemption_sync_point`).
    Otherwise, and for SIGINT, the processes agree at log steps (a collective).
    """

    def __init__(self, log_every: int):
        self.log_every = log_every
        self.received: list[int] = []
        self.previous = {}
        self.preemption_service = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
        # JAX's service has its own SIGTERM handler: a Python one would replace it
        signals = (signal.SIGINT,) if self.preemption_service else (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self.previous[sig] = signal.signal(sig, lambda signum, _frame: self.received.append(signum))

    def __call__(self, run: Run) -> None:
        if self.preemption_service and multihost_utils.reached_preemption_sync_point(run.step):
            self._stop(run, signal.SIGTERM)
        if run.step == run.total_steps or (jax.process_count() > 1 and run.step % self.log_every):
            return
        signum = self.received[0] if self.received else 0
        if jax.process_count() > 1:  # if any process received a signal, all stop
            signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
        if signum:
            self._stop(run, signum)

    @staticmethod
    def _stop(run: Run, signum: int) -> None:
        run.save_checkpoint(unless_saved=True)
        raise TrainingInterrupted(run.step, signum, str(run.workdir))

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


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


class Profile(Action):
    """Traces steps `start_step + 1` .. `start_step + steps` with `jax.profiler` into `log_dir`."""

    def __init__(self, settings: ProfileSettings, log_dir: Path):
        self.first, self.last, self.log_dir = (
            settings.start_step,
            settings.start_step + settings.steps,
            log_dir,
        )
        self.tracing = False

    def __call__(self, run: Run) -> None:
        if run.step == self.first and not self.tracing:
            jax.block_until_ready(run.state)
            jax.profiler.start_trace(str(self.log_dir))
            self.tracing = True
        elif run.step >= self.last and self.tracing:
            self.close(run.state)

    def close(self, state=None) -> None:
        if self.tracing:
            if state is not None:
                jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.tracing = False
            logging.info("profile of steps %d-%d written to %s", self.first + 1, self.last, self.log_dir)


def close_all(closers: Sequence[tuple[str, Callable[[], None]]], *, raising: bool = True) -> None:
    """Calls every `(what, close)` of `closers`, whatever the others raise. The first error is raised
    at the end if `raising` (no other error is on its way out: the run's own error is the one to report);
    every other one is logged in a line."""
    errors = []
    for what, close in closers:
        try:
            close()
        except Exception as error:  # noqa: BLE001 - reported below: closing goes on
            errors.append((what, error))
    for what, error in errors[1:] if raising else errors:
        logging.warning("closing %s failed: %s: %s", what, type(error).__name__, error)
    if raising and errors:
        raise errors[0][1]


@contextlib.contextmanager
def closing(actions: list[Action]):
    """Calls every action's `close` on leaving (in reverse order), whatever happened (`close_all`)."""

    def closers():  # the actions of the end: some may have been added in the block
        return [(type(action).__name__, action.close) for action in reversed(actions)]

    try:
        yield actions
    except BaseException:
        close_all(closers(), raising=False)
        raise
    close_all(closers())
