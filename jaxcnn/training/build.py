"""Build, then run: `build_run(config, workdir)` makes everything a training run needs from its config.

It is the only code that reads a config. Each section goes to the component that owns it (`config.augment`
to `data.Augmentation`, `config.optim` to `create_optimizer`, ...), the step is composed once (ensemble,
DP-SGD, augmentation, moving average, non-finite skipping), compiled for the parallel strategy, and the
periodic work is set up as actions. `training.loop.train(run)` then runs it.

    run = build_run(config, "runs/lenet5")
    run.actions.append(my_action)         # an Action: __call__(run), end(run) and close()
    result = train(run)

The build is a few named parts, in the order they run: claim the workdir, load the data (`_load_data`),
make the model and state (`initial_state`), restore the newest checkpoint (`_restore`), compose and
compile the steps (`_compile_steps`), start the batches (`_batches`), make the actions (`_actions`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from jaxcnn import data
from jaxcnn.data.loader import training_calls
from jaxcnn.parallel import create_strategy
from jaxcnn.training import actions as actions_lib
from jaxcnn.training import ensemble as ensemble_lib
from jaxcnn.training import finetune, steps
from jaxcnn.training.checkpoint import Checkpoints, tree_bytes
from jaxcnn.training.config import read_sections, steps_per_call, validate_config
from jaxcnn.training.metrics import MetricWriter
from jaxcnn.training.model import create_model
from jaxcnn.training.optim import create_learning_rate_schedule, create_optimizer
from jaxcnn.training.per_example import dp_optimizer, dp_train_step
from jaxcnn.training.profiling import Profile
from jaxcnn.training.run import Run, RunSpec
from jaxcnn.training.state import TrainState, create_train_state
from jaxcnn.training.workdir import WorkdirError, claim_workdir, prepare_workdir

_Config: TypeAlias = ml_collections.ConfigDict  # Any to a type checker: ml_collections has no annotations
_Sections = dict[str, Any]  # the config's sections, as `validate_config` returns them

_AUGMENT_STREAM = 1  # folded into the seed's key: augmentation draws apart from initialisation


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


class _Data(NamedTuple):
    """The run's data and the lengths that follow from it."""

    train: data.ArrayDataset
    test: data.ArrayDataset
    steps_per_epoch: int
    total_steps: int
    eval_batch_size: int  # a small test split needs no full eval batch


def _load_data(config: _Config, sections: _Sections, strategy) -> _Data:
    """The training and test splits, checked against the batch sizes and test-time shift."""
    load = functools.partial(data.load, config.dataset, **sections["data"].load_options(config.dataset))
    train_data = load(split="train", num_examples=config.train_examples)
    test_data = load(split="test", num_examples=config.test_examples)
    steps_per_epoch = len(train_data) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size {config.batch_size} is larger than the {len(train_data)} training examples"
        )
    if sections["eval"].shift >= min(test_data.image_shape[:2]):
        raise ValueError(
            f"config.eval.shift {sections['eval'].shift} must be smaller than the test images' "
            f"{test_data.image_shape[0]}x{test_data.image_shape[1]} pixels"
        )
    devices = strategy.num_devices  # the eval batch is rounded up to a multiple of the devices
    eval_batch_size = min(sections["eval"].batch_size, math.ceil(len(test_data) / devices) * devices)
    strategy.check_batch_size(eval_batch_size, "config.eval.batch_size")
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    return _Data(train_data, test_data, steps_per_epoch, total_steps, eval_batch_size)


def initial_state(
    config: ml_collections.ConfigDict,
    num_classes: int,
    image_shape: Sequence[int],
    total_steps: int,
    axis_name: str | None = None,
    *,
    sections: _Sections | None = None,
) -> tuple[TrainState, Any, Callable[..., Any], Callable[..., Any]]:
    """`(state, metric_sums, step_fn, eval_step)` of a run before its first step, in the layout its
    checkpoints have (DP-SGD optimizer state, ensemble member axis, moving average of the weights).
    `sections`: the config's, as `validate_config` returns them (read here if None)."""
    if sections is None:
        sections = read_sections(config)
    model = functools.partial(
        create_model, config.model, num_classes, image_shape,
        compute=sections["compute"], model_kwargs=config.model_kwargs, axis_name=axis_name,
    )  # fmt: skip
    tx = create_optimizer(config.optimizer, config.learning_rate, total_steps, sections["optim"])
    step_fn: Callable[..., Any]  # a step of one model, of DP-SGD or of an ensemble
    eval_step: Callable[..., Any]
    step_fn, eval_step = steps.train_step, steps.eval_step
    if sections["dp"].enabled:
        tx = dp_optimizer(tx, sections["dp"].clip_norm, sections["dp"].noise_multiplier, seed=config.seed)
        step_fn = dp_train_step
    if sections["ensemble"].size > 1:
        seeds = range(config.seed, config.seed + sections["ensemble"].size)
        state = ensemble_lib.create_ensemble_state(model, tx, image_shape, seeds)
        step_fn, eval_step = ensemble_lib.ensemble_train_step, ensemble_lib.ensemble_eval_step
    else:
        state = _single_state(model(config.seed), tx, image_shape, config, sections["finetune"])
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


def _single_state(net, tx, image_shape, config: _Config, settings: finetune.FinetuneSettings) -> TrainState:
    """The state of one model, started from trained weights and partly frozen as `config.finetune` asks."""
    if settings.init_from or settings.freeze:
        frozen, lines = finetune.prepare(net, settings, config.model)
        finetune.log(lines)
        if frozen is not None:
            tx = finetune.freezing(tx, frozen)
    return create_train_state(net, tx, image_shape, config.seed)


def _restore(checkpoints: Checkpoints, strategy, state, metric_sums, total_steps: int):
    """`(state, metric_sums, earlier_seconds)` from the newest checkpoint, else as given; all in the
    strategy's layout. With several processes, arrays must be global (spanning every process's devices)
    for Orbax to read and write them collectively."""
    state, metric_sums = strategy.put_state(state), strategy.put_state(metric_sums)
    restored = checkpoints.restore_latest(strategy.host_state(state), strategy.host_state(metric_sums))
    if restored is None:
        return state, metric_sums, 0.0
    position = restored[2]
    if position.get("total_steps", total_steps) != total_steps:
        logging.warning(
            "the run goes on to step %d instead of %d: its learning-rate schedule is stretched over the new "
            "length from step %d on",
            total_steps,
            position["total_steps"],
            position["step"],
        )
    return strategy.put_state(restored[0]), strategy.put_state(restored[1]), position.get("seconds", 0.0)


def _compile_steps(config: _Config, sections: _Sections, strategy, step_fn, eval_step, run_data: _Data):
    """`(train_fn, eval_fn)` compiled for `strategy`. The step is wrapped once as the config asks: the
    uint8 images normalized and augmented before it, the moving average of the weights after it, its
    metrics added to the window's sums; `train_fn` runs a call's steps (`steps.stepping_per_call`)."""
    step: Callable[..., Any] = functools.partial(
        step_fn, label_smoothing=sections["loss"].label_smoothing, axis_name=strategy.axis_name
    )
    augment_key = jax.random.fold_in(jax.random.key(config.seed), _AUGMENT_STREAM)
    step = steps.augmenting(step, sections["augment"], augment_key, strategy.axis_name)
    step = steps.normalizing(step, run_data.train.mean, run_data.train.std)
    step = steps.averaging_weights(step, sections["ema"].decay)
    step = steps.accumulating(step, bool(sections["optim"].skip_nonfinite_steps))
    train_fn = strategy.compile_train(steps.stepping_per_call(step, run_data.train.image_shape))
    evaluation = sections["eval"]

    def eval_fn(state, batch):
        return eval_step(
            state.for_eval(),
            batch,
            axis_name=strategy.axis_name,
            flip=evaluation.flip,
            shift=evaluation.shift,
        )

    return train_fn, strategy.compile_eval(steps.normalizing(eval_fn, run_data.test.mean, run_data.test.std))


def _learning_rate(config: _Config, sections: _Sections, total_steps: int) -> Callable[[int], float]:
    """The learning rate of a step (the schedule counts updates: `optim.accumulate_steps` steps each)."""
    accumulate = sections["optim"].accumulate_steps
    schedule = create_learning_rate_schedule(
        config.learning_rate, max(total_steps // accumulate, 1), sections["optim"]
    )
    return lambda step: float(schedule(step // accumulate))


def _batches(config: _Config, sections: _Sections, strategy, run_data: _Data, start_step: int, per_call: int):
    """The training batches from `start_step` on, a call's packed in one array (`data.loader.training_calls`),
    placed by the strategy two calls ahead (`data.prefetch`: on a GPU or TPU they are on the device when
    the step wants them). Grain's iterator state is the step: the checkpoint's step resumes it."""
    stream = training_calls(
        run_data.train,
        config.batch_size,
        seed=config.seed,
        steps_per_epoch=run_data.steps_per_epoch,
        start_step=start_step,
        stop_step=run_data.total_steps,
        steps_per_call=per_call,
        workers=sections["data"].workers,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    return data.prefetch(stream, size=2, transform=strategy.put_batch)


def _actions(config: _Config, sections: _Sections, run: Run, handle_signals: bool) -> list:
    """The periodic work the config asks for: log, evaluate, checkpoint, progress, signals, profile; each
    between calls (`config.steps_per_call`), its interval rounded up to a multiple of the call's steps."""
    profiled = {"profile.start_step": sections["profile"].start_step} if sections["profile"].steps else {}
    intervals = _call_intervals(
        run.spec.steps_per_call,
        log_every=config.log_every,
        **{"eval.every": sections["eval"].every or run.spec.steps_per_epoch},
        checkpoint_every=config.checkpoint_every,
        **profiled,
    )
    actions: list[actions_lib.Action | Profile] = [
        actions_lib.LogMetrics(intervals["log_every"]),
        actions_lib.Evaluate(intervals["eval.every"]),
        actions_lib.SaveCheckpoint(intervals["checkpoint_every"]),
        actions_lib.ProgressBar(run),
    ]
    if handle_signals:
        actions.append(actions_lib.StopOnSignal(intervals["log_every"]))
    if profiled:
        profile = dataclasses.replace(sections["profile"], start_step=intervals["profile.start_step"])
        actions.append(Profile(profile, run.spec.workdir / "tensorboard"))
    return actions


def _call_intervals(per_call: int, **steps_of: int) -> dict[str, int]:
    """Each interval `steps_of[name]`, in steps, rounded up to a multiple of `per_call` (actions act between
    calls), with one logged notice naming those that changed."""
    rounded = {name: -(-value // per_call) * per_call for name, value in steps_of.items()}
    changed = [
        f"{name} {steps_of[name]} -> {value}" for name, value in rounded.items() if value != steps_of[name]
    ]
    if changed:
        logging.info(
            "config.steps_per_call %d: %s (logs, evaluations, checkpoints and the profile act between calls)",
            per_call,
            ", ".join(changed),
        )
    return rounded


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
    sections = validate_config(config)
    workdir = Path(workdir)
    with contextlib.ExitStack() as undo:  # closes what was opened if building fails part way
        # kept for `run.close()`; the other processes hold none (a nullcontext, which enters as None)
        claim = functools.partial(claim_workdir, workdir, overwrite=config.overwrite)
        lock = _on_process_0(workdir, claim) or contextlib.nullcontext()
        undo.enter_context(lock)
        strategy = create_strategy(config.parallel)
        strategy.check_batch_size(config.batch_size)
        run_data = _load_data(config, sections, strategy)
        total_steps = run_data.total_steps
        state, metric_sums, step_fn, eval_step = initial_state(
            config, run_data.train.num_classes, run_data.train.image_shape, total_steps, strategy.axis_name,
            sections=sections,
        )  # fmt: skip
        _on_process_0(workdir, functools.partial(
            prepare_workdir, workdir, config, checkpoint_bytes=tree_bytes(state), total_steps=total_steps,
            checkpoints_to_keep=sections["checkpoints"].keep, overwrite=config.overwrite,
        ))  # fmt: skip
        checkpoints = Checkpoints(workdir / "checkpoints", sections["checkpoints"].keep)
        undo.enter_context(contextlib.closing(checkpoints))
        state, metric_sums, earlier_seconds = _restore(checkpoints, strategy, state, metric_sums, total_steps)
        start_step = int(strategy.host_value(state.step))  # <= total_steps: prepare_workdir checked
        writer = MetricWriter(workdir, resume_step=start_step, enabled=jax.process_index() == 0)
        undo.enter_context(contextlib.closing(writer))
        train_fn, eval_fn = _compile_steps(config, sections, strategy, step_fn, eval_step, run_data)
        per_call = steps_per_call(config.steps_per_call, jax.default_backend())
        spec = RunSpec(
            workdir=workdir, model_name=config.model, dataset_name=config.dataset, train_data=run_data.train,
            test_data=run_data.test, strategy=strategy, train_fn=train_fn, eval_fn=eval_fn,
            start_step=start_step, total_steps=total_steps, steps_per_epoch=run_data.steps_per_epoch,
            batch_size=config.batch_size, eval_batch_size=run_data.eval_batch_size,
            learning_rate=_learning_rate(config, sections, total_steps), earlier_seconds=earlier_seconds,
            steps_per_call=per_call,
        )  # fmt: skip
        batches = _batches(config, sections, strategy, run_data, start_step, per_call)
        undo.callback(batches.close)
        run = Run(spec, batches, checkpoints, writer, lock, state, metric_sums, step=start_step)
        run.actions = _actions(config, sections, run, handle_signals)
        undo.pop_all()
        return run
