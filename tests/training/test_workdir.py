"""The workdir: its lock (held by another process, or left by a killed one), the free-space check, and the
record of another config's run."""

import json
import logging
import os
import signal
import time
from collections import namedtuple

import pytest
from lock_holder import hold_lock

from jaxcnn.training import WorkdirError, default_config, prepare_workdir, train_and_evaluate
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
