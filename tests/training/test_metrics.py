"""metrics.jsonl writing, reading and truncation on resume."""

import json

from jaxcnn.training import MetricWriter, read_metrics


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


def test_torn_last_line_is_ignored(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "split": "train"}\n{"step": 2, "spl')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "split": "train"}]


def test_disabled_writer_touches_nothing(tmp_path):
    MetricWriter(tmp_path, enabled=False).write(1, "train", loss=1.0)
    assert not (tmp_path / "metrics.jsonl").exists()
