"""`train_and_evaluate(config, workdir)`: the training loop behind `experiments/train.py`."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from jaxcnn import data, models, visualize
from jaxcnn.parallel import ensemble as ensemble_lib  # a module: jaxcnn.parallel imports jaxcnn.training
from jaxcnn.parallel.strategies import create_strategy
from jaxcnn.training import steps as step_lib
from jaxcnn.training.checkpoint import Checkpoints, tree_bytes
from jaxcnn.training.config import validate_config
from jaxcnn.training.metrics import MetricWriter, logged_training, read_metrics
from jaxcnn.training.optim import create_learning_rate_schedule, create_optimizer
from jaxcnn.training.per_example import dp_optimizer, dp_train_step
from jaxcnn.training.state import create_train_state
from jaxcnn.training.workdir import WorkdirError, finished_result, lock_workdir, prepare_workdir

_AUGMENT_STREAM = 1  # folded into the seed's key: augmentation draws apart from initialisation

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


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
    train_loss: float | None  # None: every step of the last logged window was skipped (non-finite)
    train_accuracy: float | None
    steps: int
    epochs: float
    resumed_from: int
    seconds: float  # wall time of training, summed over the segments of a resumed run
    examples_per_sec: float
    workdir: str
    ensemble_test_accuracy: float | None = None  # the averaged logits' accuracy (config.ensemble_size > 1)

    def describe(self) -> str:
        """A few lines for a person: the accuracy, how long it took and where the files are."""
        minutes, seconds = divmod(round(self.seconds), 60)
        resumed = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        training = (
            "every step skipped (non-finite)"
            if self.train_loss is None
            else f"accuracy {self.train_accuracy:.2%}, loss {self.train_loss:.4f}"
        )
        lines = [
            f"{self.model} on {self.dataset}: test accuracy {self.test_accuracy:.2%} "
            f"(loss {self.test_loss:.4f}) after {self.epochs:g} epochs ({self.steps} steps{resumed})",
            f"  last training window: {training}; "
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


def create_model(config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None = None):
    """The configured model; `axis_name` reaches models with BatchNorm (cross-device statistics)."""
    kwargs = dict(config.model_kwargs)
    if _DTYPES[config.dtype] is not None:
        kwargs["dtype"] = _DTYPES[config.dtype]
    if axis_name is not None and "axis_name" in models.arguments(config.model):
        kwargs["axis_name"] = axis_name
    return models.create(config.model, num_classes=num_classes, **kwargs)


def _train_batches(dataset, config, start_step: int, steps_per_epoch: int):
    """The run's batch stream from `start_step`: epoch e is shuffled from (seed, e)."""
    first_epoch, first_batch = divmod(start_step, steps_per_epoch)
    for epoch in itertools.count(first_epoch):
        yield from data.batches(
            dataset,
            config.batch_size,
            seed=config.seed,
            epoch=epoch,
            start_batch=first_batch if epoch == first_epoch else 0,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )


def _train_and_accumulate(
    state,
    metric_sums,
    batch,
    *,
    label_smoothing,
    axis_name,
    skip_nonfinite,
    step_fn=step_lib.train_step,
    augmentation: data.Augmentation | None = None,
    augment_key: jax.Array | None = None,
    ema_decay: float = 0.0,
):
    if augmentation is not None and augmentation.enabled:  # keys from (seed, step): resumable
        key = jax.random.fold_in(augment_key, state.step)
        batch = {**batch, "image": augmentation(key, batch["image"], axis_name=axis_name)}
    state, metrics = step_fn(state, batch, label_smoothing=label_smoothing, axis_name=axis_name)
    if ema_decay:
        state = state.update_ema(ema_decay)
    if skip_nonfinite:  # a skipped step's metrics would poison the window's sums
        finite = jnp.isfinite(metrics["loss"])
        metrics = jax.tree.map(lambda m: jnp.where(finite, m, 0.0), metrics)
        metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
    return state, step_lib.add_metrics(metric_sums, metrics)


def evaluate(eval_fn, state, dataset, batch_size: int, strategy) -> dict[str, float]:
    """Loss and accuracy over every example of `dataset` (the last batch padded and masked)."""
    total = None
    for batch in data.batches(
        dataset,
        batch_size,
        seed=0,
        epoch=0,
        shuffle=False,
        drop_remainder=False,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    ):
        metrics = eval_fn(state, strategy.put_batch(batch))
        total = metrics if total is None else step_lib.add_metrics(total, metrics)
    return step_lib.summarize(strategy.host_value(total))


@contextlib.contextmanager
def _stop_requests(enabled: bool):
    """Turns SIGTERM/SIGINT into a request the loop polls, so it can save before stopping."""
    received: list[int] = []
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def _agreed_stop(received: list[int]) -> int:
    """The signal that stops the run at this step, 0 for none. Processes stop (and save, collectively)
    only together: if any received a signal, all stop."""
    signum = received[0] if received else 0
    if jax.process_count() > 1:
        signum = int(np.max(multihost_utils.process_allgather(np.int32(signum))))
    return signum


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _kept(checkpoints: Checkpoints) -> str:
    newest = checkpoints.newest()
    if newest is None:
        return "no checkpoint has been saved yet"
    return f"the last good checkpoint, step {newest[0]}, is kept in {newest[1]}"


def _check_finite(done: int, loss: float | None, params, checkpoints: Checkpoints) -> None:
    """FloatingPointError if the window's loss (None: not measured) or the parameters are not finite."""
    if loss is not None and not math.isfinite(loss):
        raise FloatingPointError(
            f"the training loss became {loss} by step {done}; {_kept(checkpoints)} "
            "(config.skip_nonfinite_steps skips such steps instead)"
        )
    if not bool(_all_finite(params)):
        raise FloatingPointError(
            f"the parameters became non-finite by step {done}; they were not saved, and {_kept(checkpoints)}"
        )


def initial_state(config: ml_collections.ConfigDict, model, image_shape, total_steps: int):
    """`(state, metric_sums, step_fn, eval_step)` of a run before its first step: the layout its
    checkpoints have (DP-SGD optimizer state, ensemble member axis, moving average of the weights)."""
    tx = create_optimizer(config, total_steps)
    step_fn, eval_step = step_lib.train_step, step_lib.eval_step
    if config.dp_clip_norm:
        tx = dp_optimizer(tx, config.dp_clip_norm, config.dp_noise_multiplier, seed=config.seed)
        step_fn = dp_train_step
    ensemble = config.ensemble_size > 1
    if ensemble:
        seeds = range(config.seed, config.seed + config.ensemble_size)
        state = ensemble_lib.create_ensemble_state(model, tx, image_shape, seeds)
        step_fn, eval_step = ensemble_lib.ensemble_train_step, ensemble_lib.ensemble_eval_step
    else:
        state = create_train_state(model, tx, image_shape, config.seed)
    if config.ema_decay:
        state = state.with_ema()
    if config.dp_clip_norm and state.batch_stats:
        raise ValueError(
            f"config.dp_clip_norm > 0 (DP-SGD) needs per-example gradients, which config.model "
            f"{config.model!r} lacks: its BatchNorm mixes the examples; pick a model without BatchNorm"
        )
    metric_sums = step_lib.zero_metrics(skipped=bool(config.skip_nonfinite_steps), ensemble=ensemble)
    return state, metric_sums, step_fn, eval_step


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | os.PathLike, *, handle_signals: bool = True
) -> RunResult:
    """Trains `config.model` on `config.dataset`, evaluating, logging and checkpointing in `workdir`.

    Running it again with the same config and workdir resumes from the newest checkpoint and
    ends with the same metrics as a run that was never interrupted; once the run has finished, it
    returns the stored result and writes nothing. The workdir is locked while the run uses it.
    With `handle_signals`, SIGTERM and Ctrl-C save a checkpoint and raise `TrainingInterrupted`.

    Raises:
      ValueError: a bad config value (named).
      WorkdirError: the workdir is in use by another run, unwritable, too full, or holds another
        config's run.
      CheckpointError: no checkpoint in the workdir can be read, or the disk is too full for one.
      FloatingPointError: the loss or the parameters became non-finite (no checkpoint of them is saved).
      TrainingInterrupted: a signal stopped the run after a checkpoint.
    """
    validate_config(config)
    workdir = Path(workdir)
    with _on_process_0(workdir, lambda: lock_workdir(workdir)) or contextlib.nullcontext():
        stored = finished_result(workdir, config)  # reads only: every process may
        if stored is not None:
            if jax.process_index() == 0:
                logging.info(
                    "%s holds this run, finished: its result is reported, nothing is rewritten", workdir
                )
            return RunResult(**{**stored, "workdir": str(workdir)})  # where it is now
        return _train_and_evaluate(config, workdir, handle_signals)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: Path, handle_signals: bool) -> RunResult:
    strategy = create_strategy(config.parallel)
    strategy.check_batch_size(config.batch_size)
    is_writer = jax.process_index() == 0

    load = functools.partial(
        data.load, config.dataset, data_dir=config.data_dir or None, source=config.data_source
    )
    train_data = load("train", num_examples=config.train_examples)
    test_data = load("test", num_examples=config.test_examples)
    steps_per_epoch = len(train_data) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size {config.batch_size} is larger than the {len(train_data)} training examples"
        )
    if config.eval_shift >= min(test_data.image_shape[:2]):
        raise ValueError(
            f"config.eval_shift {config.eval_shift} must be smaller than the test images' "
            f"{test_data.image_shape[0]}x{test_data.image_shape[1]} pixels"
        )
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    eval_every = config.eval_every or steps_per_epoch
    # A small test split needs no full eval batch (rounded up to a multiple of the devices).
    devices = strategy.num_devices
    eval_batch_size = min(config.eval_batch_size, math.ceil(len(test_data) / devices) * devices)
    strategy.check_batch_size(eval_batch_size, "eval_batch_size")

    model = create_model(config, train_data.num_classes, strategy.axis_name)
    state, metric_sums, step_fn, eval_step = initial_state(config, model, train_data.image_shape, total_steps)
    _on_process_0(workdir, lambda: prepare_workdir(workdir, config, checkpoint_bytes=tree_bytes(state)))
    # Restored straight into the strategy's checkpoint layout: with several processes, arrays must be
    # global (spanning every process's devices) for Orbax to read and write them collectively.
    state, metric_sums = strategy.put_state(state), strategy.put_state(metric_sums)
    checkpoints = Checkpoints(workdir / "checkpoints", config.checkpoints_to_keep)
    restored = checkpoints.restore_latest(strategy.host_state(state), strategy.host_state(metric_sums))
    earlier_seconds = 0.0  # training time of the segments before a resume, as of their last checkpoint
    if restored is not None:
        state, metric_sums = strategy.put_state(restored[0]), strategy.put_state(restored[1])
        earlier_seconds = restored[2].get("seconds", 0.0)
    start_step = int(strategy.host_value(state.step))
    writer = MetricWriter(workdir, resume_step=start_step, enabled=is_writer)
    learning_rate = create_learning_rate_schedule(config, total_steps)

    train_fn = strategy.compile_train(
        functools.partial(
            _train_and_accumulate,
            label_smoothing=config.label_smoothing,
            axis_name=strategy.axis_name,
            skip_nonfinite=bool(config.skip_nonfinite_steps),
            step_fn=step_fn,
            augmentation=data.Augmentation(
                config.augment_crop_padding, config.augment_flip, config.augment_erase_probability
            ),
            augment_key=jax.random.fold_in(jax.random.key(config.seed), _AUGMENT_STREAM),
            ema_decay=config.ema_decay,
        )
    )
    eval_fn = strategy.compile_eval(
        lambda state, batch: eval_step(
            state.for_eval(),
            batch,
            axis_name=strategy.axis_name,
            flip=config.eval_flip,
            shift=config.eval_shift,
        )
    )
    batches = data.prefetch(
        _train_batches(train_data, config, start_step, steps_per_epoch), transform=strategy.put_batch
    )

    def save(done: int) -> None:
        _check_finite(done, None, state.params, checkpoints)
        position = {
            "step": done,
            "epoch": done // steps_per_epoch,
            "batch": done % steps_per_epoch,
            "seconds": earlier_seconds + time.perf_counter() - started,
        }
        checkpoints.save(strategy.host_state(state), strategy.host_state(metric_sums), position)

    started = time.perf_counter()
    window_start, window_steps, train_summary, test_summary = started, 0, None, None
    steps_timed, seconds_timed = 0, 0.0
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc=f"{config.model} on {config.dataset}",
        unit="step",
        disable=None if is_writer else True,  # None: only on a terminal
        dynamic_ncols=True,
    )
    try:
        with _stop_requests(handle_signals) as stop_signals:
            for step in range(start_step, total_steps):
                state, metric_sums = train_fn(state, metric_sums, next(batches))
                done = step + 1
                window_steps += 1
                if step == start_step:  # leave compilation out of the throughput
                    jax.block_until_ready(metric_sums)
                    window_start, window_steps = time.perf_counter(), 0
                if done % config.log_every == 0 or done == total_steps:
                    sums = strategy.host_value(metric_sums)
                    train_summary = step_lib.summarize(sums)
                    _check_finite(done, train_summary["loss"], state.params, checkpoints)
                    elapsed = time.perf_counter() - window_start
                    speed = window_steps * config.batch_size / elapsed if window_steps else float("nan")
                    steps_timed, seconds_timed = steps_timed + window_steps, seconds_timed + elapsed
                    extra = {"skipped_steps": int(sums["skipped"])} if "skipped" in sums else {}
                    writer.write(
                        done,
                        "train",
                        **train_summary,
                        examples_per_sec=speed,
                        learning_rate=float(learning_rate(step)),
                        **extra,
                    )
                    if train_summary["loss"] is None:
                        if is_writer:
                            logging.warning(
                                "step %d: every step since the last log line was skipped (non-finite)", done
                            )
                    elif not bar.disable:
                        bar.set_postfix(
                            loss=f"{train_summary['loss']:.4f}",
                            acc=f"{train_summary['accuracy']:.2%}",
                            ex_s=f"{speed:,.0f}",
                        )
                    elif is_writer:  # no progress bar (not a terminal): log instead
                        logging.info(
                            "step %d/%d: loss %.4f, accuracy %.2f%%, %.0f examples/s",
                            done,
                            total_steps,
                            train_summary["loss"],
                            100 * train_summary["accuracy"],
                            speed,
                        )
                    metric_sums = strategy.put_state(jax.tree.map(jnp.zeros_like, sums))
                    window_start, window_steps = time.perf_counter(), 0
                if done % eval_every == 0 or done == total_steps:
                    test_summary = evaluate(eval_fn, state, test_data, eval_batch_size, strategy)
                    writer.write(done, "test", **test_summary)
                    logging.info(
                        "step %d: test loss %.4f, accuracy %.2f%%",
                        done,
                        test_summary["loss"],
                        100 * test_summary["accuracy"],
                    )
                if done % config.checkpoint_every == 0 or done == total_steps:
                    save(done)
                bar.update(1)
                # Several processes agree at log steps only: the check is a collective.
                if done != total_steps and (jax.process_count() == 1 or done % config.log_every == 0):
                    signum = _agreed_stop(stop_signals)
                    if signum:
                        if done % config.checkpoint_every:
                            save(done)
                        raise TrainingInterrupted(done, signum, str(workdir))
    finally:
        bar.close()
        batches.close()
        checkpoints.close()
        writer.close()

    if test_summary is None:  # nothing left to train: report the restored state
        test_summary = evaluate(eval_fn, state, test_data, eval_batch_size, strategy)
    if train_summary is None:  # ... whose last training window and throughput are in metrics.jsonl
        train_summary = logged_training(read_metrics(workdir / "metrics.jsonl"))
    else:
        train_summary = {**train_summary, "examples_per_sec": steps_timed * config.batch_size / seconds_timed}
    result = RunResult(
        model=config.model,
        dataset=config.dataset,
        test_loss=test_summary["loss"],
        test_accuracy=test_summary["accuracy"],
        train_loss=train_summary["loss"],
        train_accuracy=train_summary["accuracy"],
        steps=total_steps,
        epochs=round(total_steps / steps_per_epoch, 2),
        resumed_from=start_step,
        seconds=earlier_seconds + time.perf_counter() - started,
        examples_per_sec=train_summary["examples_per_sec"],
        workdir=str(workdir),
        ensemble_test_accuracy=test_summary.get("ensemble_accuracy"),
    )
    if is_writer:
        visualize.save_learning_curves(workdir)
        # Written last, whole or not at all: it marks the run finished.
        temporary = workdir / "result.json.tmp"
        temporary.write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
        os.replace(temporary, workdir / "result.json")
    return result
