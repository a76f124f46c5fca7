"""`train_and_evaluate(config, workdir)`: the training loop behind `experiments/train.py`."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import logging
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
from tqdm.auto import tqdm

from jaxcnn import data, models
from jaxcnn.parallel.strategies import create_strategy
from jaxcnn.training import steps as step_lib
from jaxcnn.training.checkpoint import Checkpoints
from jaxcnn.training.config import validate_config
from jaxcnn.training.metrics import MetricWriter
from jaxcnn.training.optim import create_learning_rate_schedule, create_optimizer
from jaxcnn.training.state import create_train_state

_DTYPES = {"float32": None, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What a finished run reports."""

    model: str
    dataset: str
    test_loss: float
    test_accuracy: float
    train_loss: float
    train_accuracy: float
    steps: int
    epochs: float
    resumed_from: int
    seconds: float
    examples_per_sec: float
    workdir: str

    def describe(self) -> str:
        """A few lines for a person: the accuracy, how long it took and where the files are."""
        minutes, seconds = divmod(round(self.seconds), 60)
        resumed = f", resumed from step {self.resumed_from}" if self.resumed_from else ""
        return "\n".join(
            [
                f"{self.model} on {self.dataset}: test accuracy {self.test_accuracy:.2%} "
                f"(loss {self.test_loss:.4f}) after {self.epochs:g} epochs ({self.steps} steps{resumed})",
                f"  train accuracy {self.train_accuracy:.2%} (last {self.train_loss:.4f} loss), "
                f"{minutes}m {seconds:02d}s, {self.examples_per_sec:,.0f} examples/s",
                f"  metrics:     {os.path.join(self.workdir, 'metrics.jsonl')}",
                f"  checkpoints: {os.path.join(self.workdir, 'checkpoints')}",
            ]
        )


def create_model(config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None = None):
    """The configured model; `axis_name` reaches models with BatchNorm (cross-device statistics)."""
    kwargs = dict(config.model_kwargs)
    if _DTYPES[config.dtype] is not None:
        kwargs["dtype"] = _DTYPES[config.dtype]
    if axis_name is not None and "axis_name" in models.arguments(config.model):
        kwargs["axis_name"] = axis_name
    return models.create(config.model, num_classes=num_classes, **kwargs)


def _prepare_workdir(workdir: Path, config: ml_collections.ConfigDict) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    if not os.access(workdir, os.W_OK):
        raise PermissionError(f"workdir {workdir} is not writable")
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")


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


def _train_and_accumulate(state, metric_sums, batch, *, label_smoothing, axis_name):
    state, metrics = step_lib.train_step(state, batch, label_smoothing=label_smoothing, axis_name=axis_name)
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


def _eval_batch_size(config, num_examples: int, devices: int) -> int:
    """The configured size, or less for a small split (rounded up to a multiple of the devices)."""
    return min(config.eval_batch_size, math.ceil(num_examples / devices) * devices)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> RunResult:
    """Trains `config.model` on `config.dataset`, evaluating, logging and checkpointing in `workdir`.

    Running it again with the same config and workdir resumes from the newest checkpoint and
    ends with the same metrics as a run that was never interrupted.
    """
    validate_config(config)
    workdir = Path(workdir)
    strategy = create_strategy(config.parallel)
    strategy.check_batch_size(config.batch_size)
    is_writer = jax.process_index() == 0
    if is_writer:
        _prepare_workdir(workdir, config)

    load = functools.partial(data.load, config.dataset, data_dir=config.data_dir or None, source=config.data_source)
    train_data = load("train", num_examples=config.train_examples)
    test_data = load("test", num_examples=config.test_examples)
    steps_per_epoch = len(train_data) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(
            f"config.batch_size {config.batch_size} is larger than the {len(train_data)} training examples"
        )
    total_steps = config.num_steps or config.num_epochs * steps_per_epoch
    eval_every = config.eval_every or steps_per_epoch
    eval_batch_size = _eval_batch_size(config, len(test_data), strategy.num_devices)

    model = create_model(config, train_data.num_classes, strategy.axis_name)
    state = create_train_state(model, create_optimizer(config, total_steps), train_data.image_shape, config.seed)
    metric_sums = step_lib.zero_metrics()
    checkpoints = Checkpoints(workdir / "checkpoints", config.checkpoints_to_keep)
    restored = checkpoints.restore_latest(state, metric_sums)
    if restored is not None:
        state, metric_sums, _ = restored
    start_step = int(state.step)
    writer = MetricWriter(workdir, resume_step=start_step, enabled=is_writer)
    learning_rate = create_learning_rate_schedule(config, total_steps)

    train_fn = strategy.compile_train(
        functools.partial(
            _train_and_accumulate, label_smoothing=config.label_smoothing, axis_name=strategy.axis_name
        )
    )
    eval_fn = strategy.compile_eval(functools.partial(step_lib.eval_step, axis_name=strategy.axis_name))
    state, metric_sums = strategy.put_state(state), strategy.put_state(metric_sums)
    batches = data.prefetch(
        _train_batches(train_data, config, start_step, steps_per_epoch), transform=strategy.put_batch
    )

    started = time.perf_counter()
    window_start, window_steps, train_summary, test_summary = started, 0, None, None
    steps_timed, seconds_timed = 0, 0.0
    bar = tqdm(
        total=total_steps,
        initial=start_step,
        desc=f"{config.model} on {config.dataset}",
        unit="step",
        disable=None if is_writer else True,
        dynamic_ncols=True,
    )
    try:
        for step in range(start_step, total_steps):
            state, metric_sums = train_fn(state, metric_sums, next(batches))
            done = step + 1
            window_steps += 1
            if step == start_step:  # leave compilation out of the throughput
                jax.block_until_ready(metric_sums)
                window_start, window_steps = time.perf_counter(), 0
            if done % config.log_every == 0 or done == total_steps:
                train_summary = step_lib.summarize(strategy.host_value(metric_sums))
                if not math.isfinite(train_summary["loss"]):
                    raise FloatingPointError(
                        f"the training loss became {train_summary['loss']} by step {done}; "
                        f"the last checkpoint before it is kept in {checkpoints.directory}"
                    )
                elapsed = time.perf_counter() - window_start
                speed = window_steps * config.batch_size / elapsed if window_steps else float("nan")
                steps_timed, seconds_timed = steps_timed + window_steps, seconds_timed + elapsed
                writer.write(
                    done,
                    "train",
                    **train_summary,
                    examples_per_sec=speed,
                    learning_rate=float(learning_rate(step)),
                )
                bar.set_postfix(
                    loss=f"{train_summary['loss']:.4f}", acc=f"{train_summary['accuracy']:.2%}", ex_s=f"{speed:,.0f}"
                )
                if bar.disable and is_writer:  # no progress bar (not a terminal): log instead
                    logging.info(
                        "step %d/%d: loss %.4f, accuracy %.2f%%, %.0f examples/s",
                        done, total_steps, train_summary["loss"], 100 * train_summary["accuracy"], speed,
                    )
                metric_sums = strategy.put_state(step_lib.zero_metrics())
                window_start, window_steps = time.perf_counter(), 0
            if done % eval_every == 0 or done == total_steps:
                test_summary = evaluate(eval_fn, state, test_data, eval_batch_size, strategy)
                writer.write(done, "test", **test_summary)
                logging.info("step %d: test loss %.4f, accuracy %.2f%%", done, test_summary["loss"],
                             100 * test_summary["accuracy"])
            if done % config.checkpoint_every == 0 or done == total_steps:
                checkpoints.save(
                    strategy.host_state(state),
                    strategy.host_state(metric_sums),
                    {"step": done, "epoch": done // steps_per_epoch, "batch": done % steps_per_epoch},
                )
            bar.update(1)
    finally:
        bar.close()
        batches.close()
        checkpoints.close()

    if test_summary is None:  # nothing left to train: report the restored state
        test_summary = evaluate(eval_fn, state, test_data, eval_batch_size, strategy)
    train_summary = train_summary or {"loss": float("nan"), "accuracy": float("nan")}
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
        seconds=time.perf_counter() - started,
        examples_per_sec=steps_timed * config.batch_size / seconds_timed if seconds_timed else float("nan"),
        workdir=str(workdir),
    )
    if is_writer:
        (workdir / "result.json").write_text(json.dumps(dataclasses.asdict(result), indent=2) + "\n")
    return result
