"""The periodic work of a training run, one small action each: log, evaluate, checkpoint, show progress,
stop on a signal (and profile: `training.profiling`, beside its config section). The loop
(`training.loop.train`) calls every action of the run after each call of `config.steps_per_call` steps
(`run.step` steps done); an action decides whether the step is its own (`due`).

`training.build_run` makes the actions the config asks for; a script adds its own by appending an `Action`
to `run.actions` (`experiments/train.py` adds the plot of the learning curves).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxcnn.training import steps
from jaxcnn.training.evaluation import evaluate
from jaxcnn.training.result import TrainingInterrupted
from jaxcnn.training.run import Run, check_finite, close_all


class Action:
    """What the loop calls: after each call, after the last step, and at the end whatever happened."""

    def __call__(self, run: Run) -> None:
        """After each call (of `run.spec.steps_per_call` steps, or fewer at the run's ends)."""

    def end(self, run: Run) -> None:
        """After the run's last step, before its result is made."""

    def close(self) -> None:
        """Last, also when the run failed or was interrupted."""


def due(run: Run, every: int) -> bool:
    """Whether `run.step` is one of every `every` steps, or the run's last."""
    return run.step % every == 0 or run.step == run.spec.total_steps


class LogMetrics(Action):
    """Every `every` steps: the training metrics of the window since the last line (loss, accuracy,
    examples/s, learning rate) to `metrics.jsonl` and TensorBoard, and the window's sums back to zero.

    The throughput leaves out the first call of a segment (it compiles) and the time other actions
    spent (`run.paused_seconds`: evaluations, checkpoints). A loss or parameters that are not finite stop
    the run (`check_finite`).
    """

    def __init__(self, every: int):
        self.every = every
        self.window_start: float | None = None  # None until the segment's first call
        self.window_steps = self.last_step = 0
        self.steps_timed, self.seconds_timed = 0, 0.0

    def __call__(self, run: Run) -> None:
        if self.window_start is None:  # the segment's first call: compiled, so timed from here on
            jax.block_until_ready(run.metric_sums)
            self.window_start, self.window_steps, self.paused = time.perf_counter(), 0, run.paused_seconds
        else:
            self.window_steps += run.step - self.last_step
        self.last_step = run.step
        if not due(run, self.every):
            return
        sums = run.spec.strategy.host_value(run.metric_sums)  # waits for the window's last step
        elapsed = time.perf_counter() - self.window_start - (run.paused_seconds - self.paused)
        summary = steps.summarize(sums)
        check_finite(run, summary["loss"])
        speed = self.window_steps * run.spec.batch_size / elapsed if self.window_steps else None  # none timed
        self.steps_timed += self.window_steps
        self.seconds_timed += elapsed
        if self.seconds_timed:
            run.examples_per_sec = self.steps_timed * run.spec.batch_size / self.seconds_timed
        run.train_summary = {**summary, "examples_per_sec": speed}
        extra = {"skipped_steps": int(sums["skipped"])} if "skipped" in sums else {}
        learning_rate = run.spec.learning_rate(run.step - 1)  # that of the window's last update
        run.writer.write(
            run.step, "train", **summary, examples_per_sec=speed, learning_rate=learning_rate, **extra
        )
        if summary["loss"] is None:
            logging.warning("step %d: every step since the last log line was skipped (non-finite)", run.step)
        zeros = jax.tree.map(np.zeros_like, sums)  # `sums` is on the host
        run.metric_sums = run.spec.strategy.put_state(zeros)
        self.window_start, self.window_steps, self.paused = time.perf_counter(), 0, run.paused_seconds


class Evaluate(Action):
    """Every `every` steps (and at the last): loss and accuracy on the test split, to `metrics.jsonl`."""

    def __init__(self, every: int):
        self.every = every

    def __call__(self, run: Run) -> None:
        if not due(run, self.every):
            return
        spec = run.spec
        with run.pause():
            run.test_summary = evaluate(
                spec.eval_fn, run.state, spec.test_data, spec.eval_batch_size, spec.strategy
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
            total=run.spec.total_steps,
            initial=run.step,
            desc=run.spec.label,
            unit="step",
            disable=None if run.is_writer else True,  # None: only on a terminal
            dynamic_ncols=True,
        )
        self.shown: dict | None = None  # the train summary last shown

    def __call__(self, run: Run) -> None:
        self.bar.update(run.step - self.bar.n)
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
                run.spec.total_steps,
                summary["loss"],
                100 * summary["accuracy"],
                speed,
            )

    def close(self) -> None:
        self.bar.close()


class StopOnSignal(Action):
    """SIGTERM or SIGINT stops the run at the end of the call, after a checkpoint: `TrainingInterrupted`.

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
        # jax.config's flags are attributes it sets at run time, unknown to a type checker.
        preemption_flag = jax.config.jax_enable_preemption_service  # type: ignore[attr-defined]
        self.preemption_service = jax.process_count() > 1 and preemption_flag
        # JAX's service has its own SIGTERM handler: a Python one would replace it
        signals = (signal.SIGINT,) if self.preemption_service else (signal.SIGTERM, signal.SIGINT)
        if threading.current_thread() is threading.main_thread():
            for sig in signals:
                self.previous[sig] = signal.signal(sig, lambda signum, _frame: self.received.append(signum))

    def __call__(self, run: Run) -> None:
        if self.preemption_service and multihost_utils.reached_preemption_sync_point(run.step):
            self._stop(run, signal.SIGTERM)
        if run.step == run.spec.total_steps or (jax.process_count() > 1 and run.step % self.log_every):
            return
        signum = self.received[0] if self.received else 0
        if jax.process_count() > 1:  # if any process received a signal, all stop
            signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
        if signum:
            self._stop(run, signum)

    @staticmethod
    def _stop(run: Run, signum: int) -> None:
        run.save_checkpoint(unless_saved=True)
        raise TrainingInterrupted(run.step, signum, str(run.spec.workdir))

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def closing(actions: list[Action]) -> Iterator[list[Action]]:
    """Calls every action's `close` on leaving (in reverse order), whatever happened (`close_all`)."""

    def closers():  # the actions of the end: some may have been added in the block
        return [(type(action).__name__, action.close) for action in reversed(actions)]

    try:
        yield actions
    except BaseException:
        close_all(closers(), raising=False)
        raise
    close_all(closers())
