"""The training loop: `train(run)` steps a built run to its end; `train_and_evaluate(config, workdir)` is
build, then run, for a config.

    result = train_and_evaluate(config, "runs/lenet5")
    print(result.describe())

Running it again with the same config and workdir resumes from the newest checkpoint and ends with the
same metrics as a run that was never interrupted; once the run has finished it reports the stored result
and writes nothing. A larger `num_epochs` / `num_steps` on the same workdir extends the run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence

import ml_collections

from jaxcnn.data import UnreadableImageError
from jaxcnn.data.loader import call_steps
from jaxcnn.training.actions import Action, closing
from jaxcnn.training.build import build_run
from jaxcnn.training.config import validate_config
from jaxcnn.training.result import DataWorkerError, RunResult
from jaxcnn.training.run import Run
from jaxcnn.training.workdir import finished_result

_WORKER_DIED = "Worker process was terminated unexpectedly"  # Grain's message (0.2.18)


def train(run: Run) -> RunResult:
    """Steps `run` from `run.step` to `run.spec.total_steps`, a call of `run.spec.steps_per_call` steps at
    a time (`data.loader.call_steps`), each call followed by every action of `run.actions` (log, evaluate,
    checkpoint, ...), then reports the result. Closes the run, whatever
    happens: an error while closing is raised only if the run had none (that one is reported).

    Raises:
      DataWorkerError: a data worker process died; a checkpoint of the step reached was saved first.
      UnreadableImageError: an image did not decode (`data.bad_images="raise"`); likewise saved first.
    """
    try:
        with closing(run.actions):
            while run.step < run.spec.total_steps:
                call(run)
            for action in run.actions:
                action.end(run)
            result = run.result()
    except BaseException:
        run.close(raising=False)
        raise
    run.close()
    return result


def call(run: Run) -> None:
    """The loop's body: one call of `run.spec.train_fn` on the next call's batches, then every action."""
    batches = _next_batch(run)
    run.state, run.metric_sums = run.spec.train_fn(run.state, run.metric_sums, batches)
    per_call = run.spec.steps_per_call
    run.step = call_steps(run.step // per_call, per_call, run.step, run.spec.total_steps).stop
    for action in run.actions:
        action(run)


def _next_batch(run: Run):
    """The next call's batches. If the data fails (a data worker process died: Grain raises a RuntimeError
    saying so; an image that does not decode with `data.bad_images="raise"`), the state, which is fine, is
    saved first, so that the run resumes from where it stopped."""
    try:
        return next(run.batches)
    except UnreadableImageError as error:
        _save(run)
        raise UnreadableImageError(
            f"{error}; checkpoint saved at step {run.step} in {run.spec.workdir}: fix or remove the file, "
            "or resume with --config.data.bad_images=skip"
        ) from error
    except RuntimeError as error:
        if _WORKER_DIED not in str(error):
            raise
        _save(run)
        raise DataWorkerError(run.step, str(run.spec.workdir), str(error).split(".")[0]) from error


def _save(run: Run) -> None:
    with run.pause():
        run.save_checkpoint(unless_saved=True)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | os.PathLike,
    *,
    handle_signals: bool = True,
    actions: Sequence[Action] = (),
) -> RunResult:
    """Trains `config.model` on `config.dataset`, evaluating, logging and checkpointing in `workdir`;
    `actions` run after those the config asks for (e.g. a plot at the end).

    Raises:
      ValueError, TypeError: a bad config value (named).
      WorkdirError: the workdir is in use by another run, unwritable, too full, or holds another config's run.
      CheckpointError: no checkpoint in the workdir can be read, or the disk is too full for one.
      DataUnavailableError: the dataset cannot be had (the message says how to get it).
      DataWorkerError: a data worker process died (a checkpoint of the step reached was saved).
      UnreadableImageError: an image did not decode with `data.bad_images="raise"` (likewise saved).
      FloatingPointError: the loss or the parameters became non-finite (no checkpoint of them is saved).
      TrainingInterrupted: a signal stopped the run after a checkpoint (with `handle_signals`).
    """
    validate_config(config)
    stored = finished_result(workdir, config)
    if stored is not None:
        logging.info("%s holds this run, finished: its result is reported, nothing is rewritten", workdir)
        return dataclasses.replace(stored, workdir=str(workdir))  # where it is now, if it was moved
    run = build_run(config, workdir, handle_signals=handle_signals)
    run.actions.extend(actions)
    return train(run)
