"""The training loop end to end on small data: accuracy, resume, determinism, and failures."""

import dataclasses
import errno
import json
import logging
import math
import os
import shutil
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxcnn import models
from jaxcnn.data import UnreadableImageError
from jaxcnn.training import (
    CheckpointError,
    Checkpoints,
    DataWorkerError,
    TrainingInterrupted,
    WorkdirError,
    build_run,
    create_train_state,
    default_config,
    initial_state,
    read_metrics,
    train,
    train_and_evaluate,
    train_step,
)
from jaxcnn.training.metrics import MetricWriter
from jaxcnn.training.steps import accumulating, zero_metrics

TIMING_KEYS = {"examples_per_sec"}


def digits_config(**overrides):
    config = default_config()
    config.model = "simple_cnn"
    config.dataset = "digits"
    config.batch_size = 32
    config.num_epochs = 1
    config.optimizer = "adam"
    config.learning_rate = 2e-3
    config.log_every = 5
    config.checkpoint_every = 10
    config.update_from_flattened_dict(overrides)  # dotted keys reach sections: "augment.flip"
    return config


def _logged(workdir):
    return [
        {k: v for k, v in line.items() if k not in TIMING_KEYS}
        for line in read_metrics(workdir / "metrics.jsonl")
    ]


@pytest.mark.slow
def test_digits_reaches_90_percent(tmp_path):
    result = train_and_evaluate(digits_config(num_epochs=8), tmp_path)
    assert result.test_accuracy > 0.9
    lines = read_metrics(tmp_path / "metrics.jsonl")
    train, test = [x for x in lines if x["split"] == "train"], [x for x in lines if x["split"] == "test"]
    assert len(test) == 8 and test[-1]["accuracy"] == pytest.approx(result.test_accuracy)
    assert all({"step", "loss", "accuracy", "examples_per_sec", "learning_rate"} <= set(x) for x in train)
    assert (tmp_path / "checkpoints").is_dir() and json.loads((tmp_path / "result.json").read_text())[
        "steps"
    ] == 352
    assert "test accuracy" in result.describe() and str(tmp_path) in result.describe()


def test_same_config_and_seed_give_identical_metrics(tmp_path):
    config = digits_config(num_steps=12)
    train_and_evaluate(config, tmp_path / "a")
    train_and_evaluate(config, tmp_path / "b")
    assert _logged(tmp_path / "a") == _logged(tmp_path / "b")
    other_seed = digits_config(num_steps=12, seed=1)
    train_and_evaluate(other_seed, tmp_path / "c")
    assert _logged(tmp_path / "c") != _logged(tmp_path / "a")


RECIPES = {
    "plain": {},
    "augmented_with_ema": {
        "augment.crop_padding": 1,
        "augment.flip": True,
        "augment.erase_probability": 0.5,
        "augment.mixup_alpha": 0.2,
        "augment.cutmix_alpha": 1.0,
        "ema.decay": 0.9,
        "eval.flip": True,
        "eval.shift": 1,
    },
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_interrupted_run_resumes_bit_identically(tmp_path, monkeypatch, recipe):
    config = digits_config(
        num_steps=30, model="compact", model_kwargs={"features": (8, 16)}, log_every=4, **RECIPES[recipe]
    )
    uninterrupted = train_and_evaluate(config, tmp_path / "whole")

    write = MetricWriter.write

    def write_then_interrupt(self, step, split, **values):
        write(self, step, split, **values)
        if step == 12 and split == "train":  # mid-window for checkpoints (every 10), as a Ctrl-C would be
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(MetricWriter, "write", write_then_interrupt)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 12"):
        train_and_evaluate(config, tmp_path / "split")
    monkeypatch.undo()
    # The reported time covers both segments: the first one's, as of its checkpoint, is carried over.
    position = tmp_path / "split" / "checkpoints" / "12" / "position" / "metadata"
    assert json.loads(position.read_text())["seconds"] > 0
    position.write_text(json.dumps({**json.loads(position.read_text()), "seconds": 1000.0}))
    started = time.perf_counter()
    resumed = train_and_evaluate(config, tmp_path / "split")
    assert 1000 < resumed.seconds < 1000 + time.perf_counter() - started
    assert resumed.resumed_from == 12
    assert _logged(tmp_path / "split") == _logged(tmp_path / "whole")
    assert resumed.test_accuracy == uninterrupted.test_accuracy


def test_augmentation_and_ema_change_the_run(tmp_path):
    plain = train_and_evaluate(digits_config(num_steps=12), tmp_path / "plain")
    augmented = train_and_evaluate(
        digits_config(num_steps=12, **{"augment.crop_padding": 2}), tmp_path / "augmented"
    )
    assert augmented.train_loss != plain.train_loss
    # The moving average is what gets evaluated: its test metrics differ from the raw weights'.
    averaged = train_and_evaluate(digits_config(num_steps=12, **{"ema.decay": 0.95}), tmp_path / "ema")
    assert averaged.train_loss == plain.train_loss and averaged.test_loss != plain.test_loss
    # Test-time flips and shifts change what is evaluated, not what is trained.
    flipped = train_and_evaluate(digits_config(num_steps=12, **{"eval.flip": True}), tmp_path / "flip")
    assert flipped.train_loss == plain.train_loss and flipped.test_loss != plain.test_loss
    shifted = train_and_evaluate(digits_config(num_steps=12, **{"eval.shift": 1}), tmp_path / "shift")
    assert shifted.train_loss == plain.train_loss
    assert shifted.test_loss not in (plain.test_loss, flipped.test_loss)


def test_ema_update_by_hand():
    state = create_train_state(models.create("lenet5"), optax.sgd(0.1), (28, 28, 1), seed=0).with_ema()
    moved = state.replace(
        params=jax.tree.map(lambda p: p + 1.0, state.params), step=jnp.asarray(90, jnp.int32)
    )
    updated = moved.update_ema(0.99)
    rate = 91 / 100  # min(0.99, (1 + 90) / (10 + 90))
    jax.tree.map(
        lambda e, p: np.testing.assert_allclose(e, rate * p + (1 - rate) * (p + 1.0), rtol=1e-6, atol=1e-6),
        updated.ema_params,
        state.params,
    )
    assert (
        moved.for_eval().params is moved.ema_params
        and state.replace(ema_params=None).for_eval().ema_params is None
    )


def test_a_workdir_with_another_config_is_refused_unless_overwrite(tmp_path):
    train_and_evaluate(digits_config(num_steps=5), tmp_path)
    with pytest.raises(WorkdirError, match="learning_rate: 0.002 -> 0.01"):
        train_and_evaluate(digits_config(num_steps=5, learning_rate=0.01), tmp_path)
    result = train_and_evaluate(digits_config(num_steps=5, learning_rate=0.01, overwrite=True), tmp_path)
    assert result.resumed_from == 0
    # Logging settings may change on resume.
    train_and_evaluate(digits_config(num_steps=5, learning_rate=0.01, overwrite=True, log_every=1), tmp_path)


def test_an_unwritable_workdir_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WorkdirError, match="not writable"):
        train_and_evaluate(digits_config(num_steps=2), blocker / "run")


def test_diverging_loss_stops_without_saving_nan(tmp_path):
    config = digits_config(num_steps=40, optimizer="sgd", learning_rate=1e6, log_every=1, checkpoint_every=1)
    with pytest.raises(FloatingPointError, match="by step") as error:
        train_and_evaluate(config, tmp_path)
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    kept = tmp_path / "checkpoints" / str(saved[-1]) if saved else None
    assert (
        f"the newest checkpoint, step {saved[-1]}, saved with finite parameters, is kept in {kept}"
        if saved
        else "no checkpoint"
    ) in str(error.value)
    for line in read_metrics(tmp_path / "metrics.jsonl"):
        assert np.isfinite(line["loss"])
    if saved:  # every checkpoint that exists holds finite parameters
        template, sums, _, _ = initial_state(config, 10, (8, 8, 1), 40)
        restored, _, _ = Checkpoints(tmp_path / "checkpoints").restore_latest(template, sums)
        assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(restored.params))


def test_non_finite_steps_can_be_skipped():
    state = create_train_state(
        models.create("lenet5"), optax.apply_if_finite(optax.sgd(0.1), 3), (28, 28, 1), seed=0
    )
    batch = {
        "image": jnp.full((4, 28, 28, 1), jnp.nan),
        "label": jnp.zeros(4, jnp.int32),
        "mask": jnp.ones(4),
    }
    step = jax.jit(accumulating(train_step, skip_nonfinite=True))
    new_state, sums = step(state, zero_metrics(skipped=True), batch)
    jax.tree.map(np.testing.assert_array_equal, new_state.params, state.params)
    assert float(sums["skipped"]) == 1 and float(sums["count"]) == 0 and float(sums["loss"]) == 0


def test_a_test_time_shift_as_large_as_the_images_is_refused(tmp_path):
    with pytest.raises(ValueError, match="config.eval.shift 8 must be smaller than the test images' 8x8"):
        train_and_evaluate(digits_config(num_steps=1, **{"eval.shift": 8}), tmp_path)


def test_batch_larger_than_the_data(tmp_path):
    with pytest.raises(ValueError, match="batch_size"):
        train_and_evaluate(digits_config(batch_size=4096), tmp_path)


def test_skipped_windows_and_non_finite_weights_are_reported_then_a_corrected_config_runs(tmp_path, caplog):
    # Step 1's update (learning rate 1e30) leaves huge, finite weights whose loss overflows: steps 2-4 are
    # skipped, and after 3 in a row optax.apply_if_finite applies step 5's non-finite update.
    config = digits_config(
        num_steps=20,
        optimizer="sgd",
        learning_rate=1e30,
        **{"optim.skip_nonfinite_steps": 3},
        log_every=1,
        checkpoint_every=100,
    )
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(
            FloatingPointError,
            match=r"^the parameters became non-finite by step 5; they were not saved, and no checkpoint "
            r"has been saved yet$",
        ),
    ):
        train_and_evaluate(config, tmp_path)
    train = [line for line in read_metrics(tmp_path / "metrics.jsonl") if line["split"] == "train"]
    assert [line["step"] for line in train if line["loss"] is None] == [2, 3, 4]
    assert all(
        line["accuracy"] is None and line["skipped_steps"] == 1 for line in train if line["loss"] is None
    )
    assert "step 3: every step since the last log line was skipped (non-finite)" in caplog.text
    # The failed run saved nothing of value: a corrected config may use its workdir.
    result = train_and_evaluate(digits_config(num_steps=2, optimizer="sgd", learning_rate=0.05), tmp_path)
    assert result.resumed_from == 0 and "it saved no checkpoint and no result" in caplog.text


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """`(config, workdir, result)` of a finished run, checkpoints at steps 5, 10 and 12."""
    workdir = tmp_path_factory.mktemp("finished")
    config = digits_config(num_steps=12, log_every=4, checkpoint_every=5)
    return config, workdir, train_and_evaluate(config, workdir)


def _copy(finished_run, tmp_path):
    config, workdir, result = finished_run
    shutil.copytree(workdir, tmp_path / "run")
    return config, tmp_path / "run", result


def _files(workdir):
    """Every file of a workdir (its lock aside): modification time and bytes."""
    files = sorted(p for p in workdir.rglob("*") if p.is_file() and p.name != ".lock")
    return {p.relative_to(workdir): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def test_a_finished_run_is_reported_again_without_rewriting_anything(finished_run, tmp_path):
    config, workdir, result = _copy(finished_run, tmp_path)
    before = _files(workdir)
    assert train_and_evaluate(config, workdir) == dataclasses.replace(result, workdir=str(workdir))
    assert _files(workdir) == before
    # A crash after the final checkpoint lost result.json: it is built again, the last training window
    # from metrics.jsonl.
    (workdir / "result.json").unlink()
    rebuilt = train_and_evaluate(config, workdir)
    for field in ("test_loss", "test_accuracy", "train_loss", "train_accuracy", "steps"):
        assert getattr(rebuilt, field) == getattr(result, field), field
    assert math.isfinite(rebuilt.examples_per_sec) and rebuilt.examples_per_sec > 0
    assert json.loads((workdir / "result.json").read_text())["train_loss"] == result.train_loss


def test_an_unreadable_final_checkpoint_is_set_aside_and_the_run_finishes(finished_run, tmp_path):
    config, workdir, result = _copy(finished_run, tmp_path)
    for path in (workdir / "checkpoints" / "12").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    (workdir / "result.json").unlink()  # not finished: its final checkpoint is to be read again
    rerun = train_and_evaluate(config, workdir)
    assert rerun.resumed_from == 10 and rerun.test_accuracy == result.test_accuracy
    assert [p.name.split("-")[0] for p in (workdir / "checkpoints" / "unreadable").iterdir()] == ["12"]
    assert _logged(workdir) == _logged(finished_run[1])


def test_a_finished_run_is_extended_by_a_longer_config(finished_run, tmp_path, caplog):
    """As Keras's initial_epoch or Lightning's max_epochs: more steps on the same workdir go on from the
    last checkpoint, and the log says the schedule was stretched."""
    config, workdir, result = _copy(finished_run, tmp_path)
    longer = digits_config(num_steps=18, log_every=4, checkpoint_every=5)
    with caplog.at_level(logging.WARNING):
        extended = train_and_evaluate(longer, workdir)
    assert extended.resumed_from == 12 and extended.steps == 18
    assert "goes on to step 18 instead of 12: its learning-rate schedule is stretched" in caplog.text
    steps = [line["step"] for line in read_metrics(workdir / "metrics.jsonl") if line["split"] == "train"]
    assert steps == [4, 8, 12, 16, 18]
    assert json.loads((workdir / "result.json").read_text())["steps"] == 18
    before = _files(workdir)
    with pytest.raises(WorkdirError, match="at step 18, past the 12 steps configured now"):
        train_and_evaluate(config, workdir)  # shorter again: refused, nothing lost
    assert _files(workdir) == before


def test_gradient_accumulation_and_a_profile_of_a_few_steps(tmp_path):
    config = digits_config(num_steps=6, log_every=2, **{"optim.accumulate_steps": 2})
    config.update_from_flattened_dict({"profile.start_step": 2, "profile.steps": 2})
    result = train_and_evaluate(config, tmp_path)
    assert result.steps == 6 and math.isfinite(result.train_loss)
    traces = list((tmp_path / "tensorboard" / "plugins" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 0


def test_a_finished_run_rerun_with_resumable_keys_changed_rewrites_nothing(finished_run, tmp_path):
    config, workdir, result = _copy(finished_run, tmp_path)
    before = _files(workdir)
    changed = digits_config(num_steps=12, log_every=3, checkpoint_every=5, **{"data.workers": 2})
    assert train_and_evaluate(changed, workdir) == dataclasses.replace(result, workdir=str(workdir))
    assert _files(workdir) == before


def test_a_damaged_result_json_is_rebuilt_from_the_final_checkpoint(finished_run, tmp_path, caplog):
    config, workdir, result = _copy(finished_run, tmp_path)
    (workdir / "result.json").write_text('{"steps": 12}')
    with caplog.at_level(logging.WARNING):
        rebuilt = train_and_evaluate(config, workdir)
    assert "result.json cannot be read (fields missing" in caplog.text
    assert (rebuilt.test_accuracy, rebuilt.steps) == (result.test_accuracy, 12)
    assert json.loads((workdir / "result.json").read_text())["test_loss"] == result.test_loss


class _DyingAt:
    """Batches that raise `error` (default: Grain's, for a killed data worker) before the batch of step
    `step`."""

    def __init__(self, step, batches, error=None):
        self.step, self.batches, self.served = step, batches, 0
        self.error = error or RuntimeError(
            "Worker process was terminated unexpectedly with exit code -9. Search the logs"
        )

    def __next__(self):
        if self.served == self.step:
            raise self.error
        self.served += 1
        return next(self.batches)

    def close(self):
        self.batches.close()


def test_a_dead_data_worker_stops_the_run_after_a_checkpoint_and_it_resumes(finished_run, tmp_path):
    config, whole, _ = finished_run
    run = build_run(config, tmp_path, handle_signals=False)
    run.batches = _DyingAt(7, run.batches)
    with pytest.raises(
        DataWorkerError,
        match=rf"^a data worker process died at step 7 \(Worker process was terminated unexpectedly with "
        rf"exit code -9\); checkpoint saved in {tmp_path}; run the same command again to resume$",
    ):
        train(run)
    assert Checkpoints(tmp_path / "checkpoints").steps()[-1] == 7
    assert train_and_evaluate(config, tmp_path).resumed_from == 7
    assert _logged(tmp_path) == _logged(whole)


def test_an_undecodable_image_under_raise_stops_the_run_after_a_checkpoint_and_it_resumes(
    finished_run, tmp_path
):
    config, whole, _ = finished_run
    raising = config.copy_and_resolve_references()
    raising.data.bad_images = "raise"
    run = build_run(raising, tmp_path, handle_signals=False)
    run.batches = _DyingAt(6, run.batches, UnreadableImageError("cannot decode train/cat/1.png"))
    with pytest.raises(
        UnreadableImageError,
        match=rf"^cannot decode train/cat/1.png; checkpoint saved at step 6 in {tmp_path}: fix or remove "
        r"the file, or resume with --config.data.bad_images=skip$",
    ):
        train(run)
    assert Checkpoints(tmp_path / "checkpoints").steps()[-1] == 6
    assert train_and_evaluate(config, tmp_path).resumed_from == 6  # bad_images="skip": a resumable key
    assert _logged(tmp_path) == _logged(whole)


def _raising(error):
    """A function that raises `error`, whatever it is passed."""

    def fail(*args, **kwargs):
        raise error

    return fail


def test_errors_while_closing_leave_the_runs_own_error_to_report(tmp_path, monkeypatch, caplog):
    """A full disk: the checkpoint's CheckpointError is raised, not the TensorBoard flush's OSError after it,
    and every part of the run is closed (the workdir unlocked)."""
    run = build_run(digits_config(num_steps=4, checkpoint_every=2), tmp_path, handle_signals=False)

    disk_full = _raising(OSError(errno.ENOSPC, "No space left on device"))
    monkeypatch.setattr(run.checkpoints, "save", _raising(CheckpointError("disk full")))
    monkeypatch.setattr(run.writer._tensorboard, "close", disk_full)
    monkeypatch.setattr(run.batches, "close", disk_full)
    with caplog.at_level(logging.WARNING), pytest.raises(CheckpointError, match="^disk full$"):
        train(run)
    assert "closing the metric files failed: WorkdirError: cannot write" in caplog.text
    assert "closing the batch pipeline failed: OSError" in caplog.text
    assert (tmp_path / ".lock").read_text() == ""  # released
    # No error of its own: the first error while closing is the run's, the others are logged.
    run = build_run(
        digits_config(num_steps=4, checkpoint_every=2, overwrite=True), tmp_path, handle_signals=False
    )
    monkeypatch.setattr(run.writer._tensorboard, "close", disk_full)
    with pytest.raises(
        WorkdirError, match=rf"^cannot write {tmp_path}/tensorboard \(No space left on device\)"
    ):
        train(run)
    assert (tmp_path / ".lock").read_text() == ""
    # A file system turned read-only under the checkpoints: one error naming them.
    run = build_run(digits_config(num_steps=4, checkpoint_every=2), tmp_path / "ro", handle_signals=False)
    read_only = OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(ocp.CheckpointManager, "save", _raising(read_only))
    with pytest.raises(
        WorkdirError, match=rf"^cannot write {tmp_path}/ro/checkpoints \(Read-only file system\)"
    ):
        train(run)


def test_a_final_window_of_skipped_steps_is_reported_as_not_measured(tmp_path):
    config = digits_config(
        num_steps=4, optimizer="sgd", learning_rate=1e30, log_every=2, **{"optim.skip_nonfinite_steps": 1000}
    )
    result = train_and_evaluate(config, tmp_path)
    assert result.train_loss is None and "loss n/a" in result.describe()

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    stored = json.loads((tmp_path / "result.json").read_text(), parse_constant=refuse)  # strict JSON
    assert stored["train_loss"] is None
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)
    assert "loss n/a" in train_and_evaluate(config, tmp_path).describe()  # the stored result, again
