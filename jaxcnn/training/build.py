"""Build, then run: `build_run(config, workdir)` makes everything a training run needs from its config.

It is the only code that reads a config. Each section goes to the component that owns it (`config.augment`
to `data.Augmentation`, `config.optim` to `create_optimizer`, ...), the step is composed once (ensemble,
DP-SGD, augmentation, moving average, non-finite skipping), compiled for the parallel strategy, and the
periodic work is set up as actions. `training.loop.train(run)` then runs it.

    run = build_run(config, "runs/lenet5")
    run.actions.append(my_action)         # anything with __call__(run), optionally end(run) and close()
    result = train(run)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import multihost_utils

from jaxcnn import data
from jaxcnn._files import strict_json
from jaxcnn.parallel import create_strategy
from jaxcnn.training import actions as actions_lib
from jaxcnn.training import ensemble as ensemble_lib
from jaxcnn.training import finetune, steps
from jaxcnn.training.checkpoint import Checkpoints, tree_bytes
from jaxcnn.training.config import read_sections, validate_config
from jaxcnn.training.evaluation import evaluate
from jaxcnn.training.metrics import MetricWriter, logged_training, read_metrics
from jaxcnn.training.model import create_model
from jaxcnn.training.optim import create_learning_rate_schedule, create_optimizer
from jaxcnn.training.per_example import dp_optimizer, dp_train_step
from jaxcnn.training.result import RunResult
from jaxcnn.training.state import TrainState, create_train_state
from jaxcnn.training.workdir import WorkdirError, claim_workdir, prepare_workdir, write_file, writing

_AUGMENT_STREAM = 1  # folded into the seed's key: augmentation draws apart from initialisation


@dataclasses.dataclass(eq=False)
class Run:
    """A training run, built by `build_run`: what the loop and its actions read, and the state they move.

    The loop replaces `state` and `metric_sums` after each step and counts `step` (steps done); actions
    record `train_summary`, `test_summary` and `examples_per_sec` for the result.
    """

    workdir: Path
    model_name: str
    dataset_name: str
    train_data: data.ArrayDataset
    test_data: data.ArrayDataset
    strategy: Any
    state: TrainState
    metric_sums: steps.Metrics
    train_fn: Any  # (state, metric_sums, batch) -> (state, metric_sums), compiled for the strategy
    eval_fn: Any  # (state, batch) -> metric sums, compiled for the strategy
    batches: Any  # the batches from `start_step` on, as `strategy.put_batch` places them (`data.prefetch`)
    start_step: int
    total_steps: int
    steps_per_epoch: int
    batch_size: int
    eval_batch_size: int
    learning_rate: optax.Schedule
    checkpoints: Checkpoints
    writer: MetricWriter
    earlier_seconds: float  # training time of the segments before a resume, as of their last checkpoint
    lock: contextlib.AbstractContextManager  # the workdir's, held until `close`
    actions: list = dataclasses.field(default_factory=list)
    step: int = 0
    train_summary: dict | None = None
    test_summary: dict | None = None
    examples_per_sec: float = float("nan")
    started: float = dataclasses.field(default_factory=time.perf_counter)
    paused_seconds: float = 0.0  # spent by actions that stop training (evaluations, checkpoints)
    saved_step: int = -1

    @property
    def label(self) -> str:
        return f"{self.model_name} on {self.dataset_name}"

    @property
    def is_writer(self) -> bool:
        """Process 0 writes the metrics, plots and result; every process takes part in checkpoints."""
        return jax.process_index() == 0

    @contextlib.contextmanager
    def pause(self):
        """Time spent in the block is not training time for the throughput (`paused_seconds`)."""
        jax.block_until_ready(self.state)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - started

    def seconds(self) -> float:
        """Training time so far, over every segment of the run."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def save_checkpoint(self, unless_saved: bool = False) -> None:
        """A checkpoint of this step: state, metric sums and data position (refused for parameters that
        are not finite: the previous checkpoint stays the newest)."""
        if unless_saved and self.saved_step == self.step:
            return
        actions_lib.check_finite(self)
        position = {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "batch": self.step % self.steps_per_epoch,
            "total_steps": self.total_steps,
            "seconds": self.seconds(),
        }
        host = self.strategy.host_state
        with writing(self.checkpoints.directory):  # a file system turned read-only, say
            self.checkpoints.save(host(self.state), host(self.metric_sums), position)
        self.saved_step = self.step

    def result(self) -> RunResult:
        """The run's result, written to `WORKDIR/result.json` (by process 0, last: it marks the run
        finished); the test split is evaluated if no evaluation ran in this segment."""
        if self.test_summary is None:
            self.test_summary = evaluate(
                self.eval_fn, self.state, self.test_data, self.eval_batch_size, self.strategy
            )
        if self.train_summary is None:  # nothing trained in this segment: its last window is in metrics.jsonl
            training = logged_training(read_metrics(self.workdir / "metrics.jsonl"))
        else:
            training = {**self.train_summary, "examples_per_sec": self.examples_per_sec}
        result = RunResult(
            model=self.model_name,
            dataset=self.dataset_name,
            test_loss=self.test_summary["loss"],
            test_accuracy=self.test_summary["accuracy"],
            train_loss=training["loss"],
            train_accuracy=training["accuracy"],
            steps=self.total_steps,
            epochs=round(self.total_steps / self.steps_per_epoch, 2),
            resumed_from=self.start_step,
            seconds=self.seconds(),
            examples_per_sec=training["examples_per_sec"],
            workdir=str(self.workdir),
            ensemble_test_accuracy=self.test_summary.get("ensemble_accuracy"),
            class_names=list(self.train_data.class_names),
        )
        if self.is_writer:
            write_file(self.workdir / "result.json", strict_json(dataclasses.asdict(result), indent=2) + "\n")
        return result

    def _close_checkpoints(self) -> None:
        """Waits for the last save, which may fail on the file system as `save_checkpoint` does."""
        with writing(self.checkpoints.directory):
            self.checkpoints.close()

    def close(self, raising: bool = True) -> None:
        """Stops the batch thread, closes the checkpoints (waiting for the last save) and metric files, and
        unlocks the workdir: each whatever the others raise. The first error is raised if `raising`, else
        logged, as the others are (`actions.close_all`): an error on its way out is the run's to report."""
        actions_lib.close_all(
            [
                ("the batch pipeline", self.batches.close),
                ("the checkpoints", self._close_checkpoints),
                ("the metric files", self.writer.close),
                ("the workdir's lock", lambda: self.lock.__exit__(None, None, None)),
            ],
            raising=raising,
        )


def _on_process_0(workdir: Path, action):
    """`action()` on process 0 (it locks or prepares the workdir), None on the others, which wait for it
    and fail with it, instead of hanging in the first collective."""
    error, value = None, None
    if jax.process_index() == 0:
        try:
            value = action()
        except WorkdirError as e:
            error = e
    if jax.process_count() > 1:
        failed = bool(multihost_utils.broadcast_one_to_all(np.int32(error is not None)))
        if failed and error is None:
            raise WorkdirError(f"process 0 could not use workdir {workdir}; its output says why")
    if error is not None:
        raise error
    return value


def initial_state(
    config: ml_collections.ConfigDict, num_classes: int, image_shape, total_steps: int, axis_name=None
):
    """`(state, metric_sums, step_fn, eval_step)` of a run before its first step, in the layout its
    checkpoints have (DP-SGD optimizer state, ensemble member axis, moving average of the weights)."""
    sections = read_sections(config)
    model = functools.partial(
        create_model, config.model, num_classes, image_shape,
        compute=sections["compute"], model_kwargs=config.model_kwargs, axis_name=axis_name,
    )  # fmt: skip
    tx = create_optimizer(config.optimizer, config.learning_rate, total_steps, sections["optim"])
    step_fn, eval_step = steps.train_step, steps.eval_step
    if sections["dp"].enabled:
        tx = dp_optimizer(tx, sections["dp"].clip_norm, sections["dp"].noise_multiplier, seed=config.seed)
        step_fn = dp_train_step
    if sections["ensemble"].size > 1:
        seeds = range(config.seed, config.seed + sections["ensemble"].size)
        state = ensemble_lib.create_ensemble_state(model, tx, image_shape, seeds)
        step_fn, eval_step = ensemble_lib.ensemble_train_step, ensemble_lib.ensemble_eval_step
    else:
        net, frozen = model(config.seed), None
        if sections["finetune"].init_from or sections["finetune"].freeze:
            frozen, lines = finetune.prepare(net, sections["finetune"], config.model)
            finetune.log(lines)
        if frozen is not None:
            tx = finetune.freezing(tx, frozen)
        state = create_train_state(net, tx, image_shape, config.seed)
    if sections["ema"].decay:
        state = state.with_ema()
    if sections["dp"].enabled and state.batch_stats:
        raise ValueError(
            f"config.dp.clip_norm > 0 (DP-SGD) needs per-example gradients, which config.model "
            f"{config.model!r} lacks: its BatchNorm mixes the examples; pick a model without BatchNorm"
        )
    metric_sums = steps.zero_metrics(
        skipped=bool(sections["optim"].skip_nonfinite_steps), ensemble=sections["ensemble"].size > 1
    )
    return state, metric_sums, step_fn, eval_step


def build_run(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, handle_signals: bool = True
) -> Run:
    """Everything a run of `config` in `workdir` needs, restored from the newest checkpoint there.

    The workdir is locked (by process 0) until `run.close()`, which `training.train(run)` calls. With
    `handle_signals`, SIGTERM and Ctrl-C stop the run after a checkpoint (`TrainingInterrupted`).

    Raises:
      ValueError, TypeError: a bad config value (named), before anything is touched.
      WorkdirError: the workdir is in use by another run, unwritable, too full, or holds another config's
        run.
      CheckpointError: no checkpoint in the workdir can be read.
      DataUnavailableError: the dataset cannot be had (the message says how to get it).
    """
    validate_config(config)
    sections = read_sections(config)
    workdir = Path(workdir)
    with contextlib.ExitStack() as undo:  # closes what was opened if building fails part way
        # kept for `run.close()`; the other processes hold none (a nullcontext, which enters as None)
        lock = (
            _on_process_0(workdir, lambda: claim_workdir(workdir, overwrite=config.overwrite))
            or contextlib.nullcontext()
        )
        undo.enter_context(lock)
        strategy = create_strategy(config.parallel)
        strategy.check_batch_size(config.batch_size)
        load = functools.partial(data.load, config.dataset, **sections["data"].load_options(config.dataset))
        train_data = load("train", num_examples=config.train_examples)
        test_data = load("test", num_examples=config.test_examples)
        steps_per_epoch = len(train_data) // config.batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"config.batch_size {config.batch_size} is larger than the {len(train_data)} training "
                "examples"
            )
        if sections["eval"].shift >= min(test_data.image_shape[:2]):
            raise ValueError(
                f"config.eval.shift {sections['eval'].shift} must be smaller than the test images' "
                f"{test_data.image_shape[0]}x{test_data.image_shape[1]} pixels"
            )
        total_steps = config.num_steps or config.num_epochs * steps_per_epoch
        # A small test split needs no full eval batch (rounded up to a multiple of the devices).
        devices = strategy.num_devices
        eval_batch_size = min(sections["eval"].batch_size, math.ceil(len(test_data) / devices) * devices)
        strategy.check_batch_size(eval_batch_size, "config.eval.batch_size")

        state, metric_sums, step_fn, eval_step = initial_state(
            config, train_data.num_classes, train_data.image_shape, total_steps, strategy.axis_name
        )
        _on_process_0(
            workdir,
            lambda: prepare_workdir(
                workdir,
                config,
                checkpoint_bytes=tree_bytes(state),
                checkpoints_to_keep=sections["checkpoints"].keep,
                overwrite=config.overwrite,
                total_steps=total_steps,
            ),
        )
        # Restored straight into the strategy's checkpoint layout: with several processes, arrays must be
        # global (spanning every process's devices) for Orbax to read and write them collectively.
        state, metric_sums = strategy.put_state(state), strategy.put_state(metric_sums)
        checkpoints = undo.enter_context(
            contextlib.closing(Checkpoints(workdir / "checkpoints", sections["checkpoints"].keep))
        )
        restored = checkpoints.restore_latest(strategy.host_state(state), strategy.host_state(metric_sums))
        earlier_seconds = 0.0
        if restored is not None:
            state, metric_sums = strategy.put_state(restored[0]), strategy.put_state(restored[1])
            position = restored[2]
            earlier_seconds = position.get("seconds", 0.0)
            if position.get("total_steps", total_steps) != total_steps:
                logging.warning(
                    "the run goes on to step %d instead of %d: its learning-rate schedule is stretched over "
                    "the new length from step %d on",
                    total_steps,
                    position["total_steps"],
                    position["step"],
                )
        start_step = int(strategy.host_value(state.step))  # <= total_steps: prepare_workdir checked
        writer = undo.enter_context(
            contextlib.closing(
                MetricWriter(workdir, resume_step=start_step, enabled=jax.process_index() == 0)
            )
        )
        # The step, wrapped once as the config asks: the uint8 images normalized and augmented before it,
        # the moving average of the weights after it, its metrics added to the window's sums.
        step = functools.partial(
            step_fn, label_smoothing=sections["loss"].label_smoothing, axis_name=strategy.axis_name
        )
        augment_key = jax.random.fold_in(jax.random.key(config.seed), _AUGMENT_STREAM)
        step = steps.augmenting(step, sections["augment"], augment_key, strategy.axis_name)
        step = steps.normalizing(step, train_data.mean, train_data.std)
        step = steps.averaging_weights(step, sections["ema"].decay)
        train_fn = strategy.compile_train(
            steps.accumulating(step, bool(sections["optim"].skip_nonfinite_steps))
        )
        eval_fn = strategy.compile_eval(
            steps.normalizing(
                lambda state, batch: eval_step(
                    state.for_eval(),
                    batch,
                    axis_name=strategy.axis_name,
                    flip=sections["eval"].flip,
                    shift=sections["eval"].shift,
                ),
                test_data.mean,
                test_data.std,
            )
        )
        updates = max(total_steps // sections["optim"].accumulate_steps, 1)
        schedule = create_learning_rate_schedule(config.learning_rate, updates, sections["optim"])
        # Grain's iterator state is the step (element k is step k's batch): the checkpoint's step resumes it.
        stream = data.training_batches(
            train_data,
            config.batch_size,
            seed=config.seed,
            steps_per_epoch=steps_per_epoch,
            start_step=start_step,
            stop_step=total_steps,
            workers=sections["data"].workers,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        batches = data.prefetch(stream, transform=strategy.put_batch)
        undo.callback(batches.close)
        run = Run(
            workdir=workdir,
            model_name=config.model,
            dataset_name=config.dataset,
            train_data=train_data,
            test_data=test_data,
            strategy=strategy,
            state=state,
            metric_sums=metric_sums,
            train_fn=train_fn,
            eval_fn=eval_fn,
            batches=batches,
            start_step=start_step,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            batch_size=config.batch_size,
            eval_batch_size=eval_batch_size,
            learning_rate=lambda step: float(schedule(step // sections["optim"].accumulate_steps)),
            checkpoints=checkpoints,
            writer=writer,
            earlier_seconds=earlier_seconds,
            lock=lock,
            step=start_step,
        )
        run.actions = [
            actions_lib.LogMetrics(config.log_every),
            actions_lib.Evaluate(sections["eval"].every or steps_per_epoch),
            actions_lib.SaveCheckpoint(config.checkpoint_every),
            actions_lib.ProgressBar(run),
        ]
        if handle_signals:
            run.actions.append(actions_lib.StopOnSignal(config.log_every))
        if sections["profile"].steps:
            run.actions.append(actions_lib.Profile(sections["profile"], workdir / "tensorboard"))
        undo.pop_all()
        return run
