"""The workdir: its lock (held by another process, or left by a killed one), the free-space check, and the
record of another config's run."""

import json
import logging
import os
import pathlib
import signal
import time
from collections import namedtuple

import pytest
from lock_holder import hold_lock

import jaxcnn
from jaxcnn.training import (
    MetricWriter,
    RunResult,
    WorkdirError,
    default_config,
    prepare_workdir,
    train_and_evaluate,
)
from jaxcnn.training import workdir as workdir_lib


def test_a_locked_workdir_is_refused_at_once_naming_the_holder(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        with pytest.raises(
            WorkdirError, match=rf"workdir {tmp_path} is in use by another run \(pid {holder.pid} on "
        ):
            workdir_lib.lock_workdir(tmp_path)
        config = default_config()
        config.dataset = "digits"
        started = time.monotonic()
        with pytest.raises(WorkdirError, match=f"pid {holder.pid} on .*, started .*: -c {tmp_path}\\)"):
            train_and_evaluate(config, tmp_path)
        assert time.monotonic() - started < 5  # before loading data or building the model
        assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]  # nothing touched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with workdir_lib.lock_workdir(tmp_path) as lock:  # released with its holder's end
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert lock.path.read_text() == ""


def test_the_lock_of_a_killed_run_is_taken_over_with_a_warning(tmp_path, caplog):
    holder = hold_lock(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with caplog.at_level(logging.WARNING), workdir_lib.lock_workdir(tmp_path):
        pass
    assert f"taking over the lock of a run that was stopped (pid {holder.pid} on " in caplog.text


DiskUsage = namedtuple("DiskUsage", "total used free")


def _fake_checkpoint(directory, size):
    directory.mkdir(parents=True)
    (directory / "data").write_bytes(b"x" * size)


@pytest.mark.parametrize("free_kib, refused", [(150, False), (99, True)])
def test_free_space_counts_the_checkpoints_the_run_replaces(tmp_path, monkeypatch, free_kib, refused):
    # Three checkpoints of 100 KiB and one moved aside (kept): a run keeping 3 of its own needs room for
    # a fourth being written, 100 KiB, as it rotates the old ones out (not 400 KiB).
    for name in ("5", "10", "15.orbax-checkpoint-tmp", "unreadable/20-20250101T000000Z"):
        _fake_checkpoint(tmp_path / "checkpoints" / name, 100 * 2**10)
    monkeypatch.setattr(workdir_lib.shutil, "disk_usage", lambda path: DiskUsage(2**40, 0, free_kib * 2**10))
    if refused:
        with pytest.raises(
            WorkdirError, match=r"has 99 KiB free, but this run's checkpoints need about 100 KiB"
        ):
            prepare_workdir(tmp_path, default_config(), checkpoint_bytes=100 * 2**10)
    else:
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=100 * 2**10)


def test_the_space_check_prints_numbers_that_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lib.shutil, "disk_usage", lambda path: DiskUsage(2**40, 0, 1_950 * 2**10))
    with pytest.raises(
        WorkdirError, match=r"has 1,950 KiB free, but this run's checkpoints need about 2,000 KiB"
    ):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=500 * 2**10)  # 3 kept + 1


def test_the_record_of_a_run_that_left_nothing_of_value_yields_to_another_config(tmp_path, caplog):
    failed = default_config()
    failed.learning_rate = 1e6
    prepare_workdir(tmp_path, failed, checkpoint_bytes=1)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train", "loss": 1e30}\n')
    with caplog.at_level(logging.WARNING):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=1)
    assert (
        "learning_rate: 1000000.0 -> 0.05" in caplog.text
        and "it saved no checkpoint and no result" in caplog.text
    )
    assert json.loads((tmp_path / "config.json").read_text())["learning_rate"] == 0.05
    assert not (tmp_path / "metrics.jsonl").exists()
    # A run with a result is of value: refused.
    (tmp_path / "result.json").write_text("{}")
    with pytest.raises(WorkdirError, match="learning_rate: 0.05 -> 1000000.0"):
        prepare_workdir(tmp_path, failed, checkpoint_bytes=1)


def _snapshot(directory):
    """Every file under `directory` and its bytes (the lock aside)."""
    return {
        path.relative_to(directory): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def test_a_directory_that_is_no_jaxcnn_run_is_refused_and_overwrite_removes_only_jaxcnn_files(tmp_path):
    project = tmp_path / "myproject"
    (project / "plots").mkdir(parents=True)
    (project / "config.json").write_text('{"name": "my project"}')
    (project / "plots" / "figure.png").write_text("fig")
    before = _snapshot(project)
    with pytest.raises(
        WorkdirError, match=r"myproject is not empty and holds no jaxcnn run \(config.json, plots\)"
    ):
        workdir_lib.claim_workdir(project)
    assert _snapshot(project) == before and not (project / ".lock").exists()
    # With overwrite the run takes it, and discards only what jaxcnn writes.
    (project / "plots" / "curves.png").write_text("jaxcnn's curves")
    (project / "tensorboard").mkdir()
    (project / "tensorboard" / "events.out.tfevents.1.host").write_text("events")
    (project / "tensorboard" / "notes.txt").write_text("mine")
    (project / "tensorboard" / "plugins" / "profile" / "run").mkdir(parents=True)
    (project / "tensorboard" / "plugins" / "profile" / "run" / "host.xplane.pb").write_text("trace")
    (project / "metrics.jsonl").write_text("")
    with workdir_lib.claim_workdir(project, overwrite=True):
        assert json.loads((project / workdir_lib.MARKER).read_text())["jaxcnn"] == jaxcnn.__version__
        prepare_workdir(project, default_config(), checkpoint_bytes=1, overwrite=True)
    assert sorted(str(path) for path in _snapshot(project)) == [
        workdir_lib.MARKER,
        "config.json",
        "plots/figure.png",
        "tensorboard/notes.txt",
    ]
    assert json.loads((project / "config.json").read_text())["model"] == default_config().model
    with workdir_lib.claim_workdir(project):  # marked: jaxcnn's from now on
        pass


def test_the_root_the_home_directory_and_an_empty_path_are_refused(tmp_path):
    (tmp_path / "root").symlink_to("/")
    for path, what in (("", "--workdir is empty"), ("/", "is the root directory"),
                       (tmp_path / "root", f"{tmp_path}/root \\(a link to /\\) is the root directory"),
                       (pathlib.Path.home(), "is the home directory")):  # fmt: skip
        with pytest.raises(WorkdirError, match=what):
            workdir_lib.claim_workdir(path, overwrite=True)
        with pytest.raises(WorkdirError, match=what):
            workdir_lib.finished_result(path, default_config())


def test_what_jaxcnn_writes_before_a_run_leaves_a_directory_free(tmp_path):
    (tmp_path / ".lock").write_text("")  # a run refused before it wrote anything
    (tmp_path / "processes").mkdir()  # experiments/launch_local.py's logs, opened as the group starts
    (tmp_path / "processes" / "process_1.log").write_text("")
    with workdir_lib.claim_workdir(tmp_path):
        assert (tmp_path / workdir_lib.MARKER).exists()


def test_a_run_of_an_earlier_jaxcnn_without_marker_is_recognised(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "config.json").write_text(default_config().to_json())
    with workdir_lib.claim_workdir(tmp_path):
        assert (tmp_path / workdir_lib.MARKER).exists()
    alone = tmp_path / "config_alone"  # a config.json of jaxcnn's keys, but nothing a run wrote next to it
    alone.mkdir()
    (alone / "config.json").write_text(default_config().to_json())
    with pytest.raises(WorkdirError, match="holds no jaxcnn run"):
        workdir_lib.claim_workdir(alone)


@pytest.mark.parametrize(
    "name, kind", [("result.json", "a file"), ("metrics.jsonl", "a file"), ("checkpoints", "a directory")]
)
def test_a_file_of_the_run_of_the_wrong_kind_names_itself(tmp_path, name, kind):
    with workdir_lib.claim_workdir(tmp_path):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=1)
    if kind == "a file":
        (tmp_path / name).mkdir()
    else:
        (tmp_path / name).write_text("")
    message = f"^{tmp_path / name} is not {kind}, as the run keeps it; move it out of the way"
    with pytest.raises(WorkdirError, match=message):
        workdir_lib.finished_result(tmp_path, default_config())
    with pytest.raises(WorkdirError, match=message):
        workdir_lib.claim_workdir(tmp_path)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (b"", "Expecting value"),
        (b"[1, 2]", "it holds a JSON list, not an object"),
        (b"\xff{", "can't decode"),
    ],
)
def test_a_damaged_config_json_names_itself_and_changes_nothing(tmp_path, caplog, damage, reason):
    with workdir_lib.claim_workdir(tmp_path):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=1)
    (tmp_path / "config.json").write_bytes(damage)
    (tmp_path / "result.json").write_text("{}")
    before = _snapshot(tmp_path)
    assert workdir_lib.finished_result(tmp_path, default_config()) is None
    message = (
        rf"workdir {tmp_path}: {tmp_path}/config.json cannot be read \(.*{reason}.*\)\. Use a new --workdir"
    )
    with pytest.raises(WorkdirError, match=message):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=1)
    assert _snapshot(tmp_path) == before
    # A run that left nothing of value is replaced, as one of another config.
    (tmp_path / "result.json").unlink()
    with caplog.at_level(logging.WARNING):
        prepare_workdir(tmp_path, default_config(), checkpoint_bytes=1)
    assert (
        "config.json cannot be read" in caplog.text and "it saved no checkpoint and no result" in caplog.text
    )
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads(default_config().to_json())


def test_a_lock_file_of_garbage_bytes_is_taken_over(tmp_path, caplog):
    (tmp_path / ".lock").write_bytes(b"\xff\xfe\x00garbage")
    with caplog.at_level(logging.WARNING), workdir_lib.lock_workdir(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert "taking over the lock of a run that was stopped (another process)" in caplog.text


def test_planted_symlinks_at_temporary_names_are_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json.tmp", "result.json.tmp", "metrics.jsonl.tmp", ".config.json.tmp"):
        (run / name).symlink_to(victim)
    prepare_workdir(run, default_config(), checkpoint_bytes=1)
    MetricWriter(run).close()
    assert victim.read_text() == "precious"
    assert json.loads((run / "config.json").read_text())["model"] == default_config().model


def _finished(workdir, config, **result):
    """`workdir` as a run of `config` that finished at step 12 would leave it (a checkpoint's directory
    stands for the checkpoint)."""
    with workdir_lib.claim_workdir(workdir):
        prepare_workdir(workdir, config, checkpoint_bytes=1)
    (workdir / "checkpoints" / "12").mkdir(parents=True)
    stored = {
        "model": "lenet5", "dataset": "digits", "test_loss": 0.5, "test_accuracy": 0.9, "train_loss": None,
        "train_accuracy": None, "steps": 12, "epochs": 1.0, "resumed_from": 0, "seconds": 2.0,
        "examples_per_sec": 100.0, "workdir": str(workdir), **result,
    }  # fmt: skip
    (workdir / "result.json").write_text(json.dumps(stored))
    return stored


def test_a_finished_run_is_reported_with_resumable_keys_changed_but_not_shorter(tmp_path):
    config = default_config()
    config.num_steps = 12
    stored = _finished(tmp_path, config)
    before = _snapshot(tmp_path)
    config.data.workers, config.log_every = 2, 7
    assert workdir_lib.finished_result(tmp_path, config) == RunResult(**stored)
    config.num_steps = 6  # shorter: refused before anything changes
    assert workdir_lib.finished_result(tmp_path, config) is None
    with pytest.raises(WorkdirError, match="holds this run at step 12, past the 6 steps configured now"):
        prepare_workdir(tmp_path, config, checkpoint_bytes=1, total_steps=6)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("damage", [{"steps": 12}, {"test_loss": "low"}, {"surprise": 1}])
def test_a_damaged_result_json_is_rebuilt(tmp_path, caplog, damage):
    config = default_config()
    stored = _finished(tmp_path, config)
    (tmp_path / "result.json").write_text(json.dumps(damage if "steps" in damage else {**stored, **damage}))
    with caplog.at_level(logging.WARNING):
        assert workdir_lib.finished_result(tmp_path, config) is None
    assert f"{tmp_path}/result.json cannot be read (" in caplog.text
    assert "the result is computed again from the final checkpoint" in caplog.text
