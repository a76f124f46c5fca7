"""metrics.jsonl writing, reading (tolerant of damaged lines) and truncation on resume."""

import errno
import json
import logging
import math
import pathlib
import subprocess
import sys

import pytest

from jaxcnn.training import MetricWriter, WorkdirError, read_metrics
from jaxcnn.training.metrics import logged_training


def test_writes_one_json_object_a_line(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(10, "train", loss=0.5, accuracy=0.75, examples_per_sec=100.0)
    writer.write(10, "test", loss=0.6, accuracy=0.7)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 10, "split": "train", "loss": 0.5, "accuracy": 0.75, "examples_per_sec": 100.0},
        {"step": 10, "split": "test", "loss": 0.6, "accuracy": 0.7},
    ]


def test_resume_drops_lines_after_the_checkpoint(tmp_path):
    writer = MetricWriter(tmp_path)
    for step in (10, 20, 30):
        writer.write(step, "train", loss=1.0 / step)
    MetricWriter(tmp_path, resume_step=20)
    assert [line["step"] for line in read_metrics(tmp_path / "metrics.jsonl")] == [10, 20]


def test_fresh_run_starts_an_empty_file(tmp_path):
    MetricWriter(tmp_path).write(1, "train", loss=1.0)
    MetricWriter(tmp_path)
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_disabled_writer_touches_nothing(tmp_path):
    MetricWriter(tmp_path, enabled=False).write(1, "train", loss=1.0)
    assert not (tmp_path / "metrics.jsonl").exists()


def _write_rows(tmp_path, steps):
    writer = MetricWriter(tmp_path)
    for step in steps:
        writer.write(step, "train", loss=1.0 / step)
    writer.close()
    return tmp_path / "metrics.jsonl"


def test_torn_last_line_is_dropped_and_logged(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl')
    with caplog.at_level(logging.WARNING):
        assert read_metrics(path) == [{"step": 1, "split": "train"}]
    assert f"{path}: dropped its torn last line 2" in caplog.text


@pytest.mark.parametrize(
    "damage",
    [
        lambda line: line[:9],
        lambda line: "\x00" * 8,
        lambda line: "[1, 2]",
        lambda line: '{"step": "20", "split": "train"}',
    ],
    ids=["cut", "zeroed", "not_a_row", "step_not_a_number"],
)
def test_a_bad_line_in_the_middle_costs_only_itself(tmp_path, caplog, damage):
    path = _write_rows(tmp_path, (10, 20, 30, 40))
    lines = path.read_text().splitlines()
    lines[1] = damage(lines[1])
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        assert [row["step"] for row in read_metrics(path)] == [10, 30, 40]
    assert f"{path}: skipped unreadable line 2" in caplog.text


def test_undecodable_bytes_cost_only_their_line(tmp_path):
    path = _write_rows(tmp_path, (10, 20, 30))
    lines = path.read_bytes().splitlines()
    lines[0] = b"\xff\xfe" + lines[0]
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert [row["step"] for row in read_metrics(path)] == [20, 30]


def test_resume_keeps_every_readable_row_before_the_checkpoint(tmp_path, caplog):
    path = _write_rows(tmp_path, (10, 20, 30, 40, 50))
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:5]
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        MetricWriter(tmp_path, resume_step=40).close()
    assert [row["step"] for row in read_metrics(path)] == [10, 30, 40]
    assert "skipped unreadable line 2" in caplog.text


def test_a_value_not_measured_is_null_in_the_file_and_absent_from_tensorboard(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(5, "train", loss=None, accuracy=None, skipped_steps=5)
    writer.close()
    assert read_metrics(tmp_path / "metrics.jsonl") == [
        {"step": 5, "split": "train", "loss": None, "accuracy": None, "skipped_steps": 5}
    ]


def test_non_finite_values_are_null_and_a_full_disk_names_the_file(tmp_path, monkeypatch):
    writer = MetricWriter(tmp_path)
    scalars = []
    monkeypatch.setattr(writer._tensorboard, "add_scalar", lambda tag, value, step: scalars.append(tag))
    writer.write(5, "test", loss=math.nan, accuracy=0.1)
    written = (tmp_path / "metrics.jsonl").read_text()
    assert written == '{"step": 5, "split": "test", "loss": null, "accuracy": 0.1}\n'
    assert scalars == ["test/accuracy"]  # a NaN is not drawn either

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "open", disk_full)
    with pytest.raises(
        WorkdirError, match=rf"^cannot write {tmp_path}/metrics.jsonl \(No space left on device\)"
    ):
        writer.write(6, "test", loss=0.5, accuracy=0.1)
    writer.close()


def test_logged_training_is_the_last_window_and_the_throughput_of_all():
    rows = [
        {"step": 4, "split": "train", "loss": 0.9, "accuracy": 0.5, "examples_per_sec": 100.0},
        {"step": 4, "split": "test", "loss": 0.8, "accuracy": 0.6},
        {"step": 5, "split": "train", "loss": 0.7, "accuracy": 0.6, "examples_per_sec": float("nan")},
        {"step": 12, "split": "train", "loss": 0.5, "accuracy": 0.75, "examples_per_sec": 300.0},
    ]
    # 4 steps at 100/s and 7 at 300/s (step 5 alone, a resumed segment's first, is not timed): 11 steps'
    # examples in 4/100 + 7/300 units of time.
    assert logged_training(rows) == {
        "loss": 0.5,
        "accuracy": 0.75,
        "examples_per_sec": 11 / (4 / 100 + 7 / 300),
    }
    assert all(math.isnan(value) for value in logged_training([]).values())


def test_tensorboard_is_written_without_importing_torch(tmp_path):
    # tensorboardX's writer imports torch if it can (~3 s of each training process's start, for type hints)
    script = (
        "import sys; from jaxcnn.training.metrics import MetricWriter\n"
        f"writer = MetricWriter({str(tmp_path)!r}); writer.write(1, 'train', loss=0.5); writer.close()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import torch  # and it still can be, afterwards\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    (events,) = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    assert b"train/loss" in events.read_bytes()
