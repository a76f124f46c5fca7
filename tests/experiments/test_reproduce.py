"""experiments/reproduce.py: seeds run, statistics and the table, and finished runs are not redone."""

import importlib.util
import json
import re
import signal
import statistics
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture
def reproduce(monkeypatch):
    monkeypatch.syspath_prepend(str(EXPERIMENTS))  # as when the script runs: configs import each other
    spec = importlib.util.spec_from_file_location("reproduce", EXPERIMENTS / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_two_seeds_make_a_row_with_mean_and_std(tmp_path, reproduce, capsys):
    out = tmp_path / "results.md"
    args = ["--configs", "digits", "--seeds", "0,1", "--workdir", str(tmp_path / "runs"), "--out", str(out)]
    reproduce.main([*args, "--set", "num_epochs=1", "--set", "log_every=22"])
    accuracies = [
        100
        * json.loads((tmp_path / "runs" / "digits" / f"seed_{s}" / "result.json").read_text())[
            "test_accuracy"
        ]
        for s in (0, 1)
    ]
    row = json.loads(out.with_suffix(".json").read_text())[0]
    assert row["accuracy_mean"] == pytest.approx(statistics.mean(accuracies))
    assert row["accuracy_std"] == pytest.approx(statistics.stdev(accuracies))
    # simple_cnn on 8x8: 320 + 18,496 (convs) + 65,792 (dense 2·2·64 -> 256) + 2,570 (dense 256 -> 10)
    assert row["parameters"] == 87_178 and row["seeds"] == [0, 1]
    table = out.read_text()
    assert (
        f"{row['accuracy_mean']:.2f}% ± {row['accuracy_std']:.2f}" in table
        and "--config.num_epochs=1" in table
    )
    # Again: the finished runs are read, not redone.
    reproduce.main([*args, "--set", "num_epochs=1", "--set", "log_every=22"])
    assert capsys.readouterr().out.count("done before") == 2
    # A later invocation with another seed joins the same row.
    reproduce.main([*args[:2], "--seeds", "2", *args[4:], "--set", "num_epochs=1", "--set", "log_every=22"])
    third = json.loads((tmp_path / "runs" / "digits" / "seed_2" / "result.json").read_text())
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["seeds"] == [0, 1, 2]
    assert row["accuracy_mean"] == pytest.approx(statistics.mean([*accuracies, 100 * third["test_accuracy"]]))


def test_merged_adds_seeds_and_reads_single_seed_rows_without_per_seed_results(reproduce):
    base = {"config": "c", "command": "cmd"}
    new = reproduce.summarized(
        base, {"1": {"accuracy": 90.0, "minutes": 2.0}, "2": {"accuracy": 92.0, "minutes": 4.0}}
    )
    old = {**base, "seeds": [0], "accuracy_mean": 94.0, "accuracy_std": 0.0, "minutes_mean": 6.0}
    row = reproduce.merged(old, new)
    assert row["seeds"] == [0, 1, 2]
    assert row["accuracy_mean"] == pytest.approx(92.0) and row["accuracy_std"] == pytest.approx(2.0)
    assert row["minutes_mean"] == pytest.approx(4.0)
    # Several seeds without per-seed results cannot be split: the new row replaces them.
    assert reproduce.merged({**old, "seeds": [0, 5]}, new)["seeds"] == [1, 2]
    # The same seed again replaces its earlier result.
    again = reproduce.summarized(base, {"2": {"accuracy": 80.0, "minutes": 1.0}})
    assert reproduce.merged(row, again)["per_seed"]["2"]["accuracy"] == 80.0


def test_unknown_config_names_the_available_ones(reproduce):
    with pytest.raises(ValueError, match="available: .*lenet5"):
        reproduce.load_config("lenet6", {})


def test_typos_in_any_config_or_override_stop_it_before_the_first_run(reproduce, tmp_path, capsys):
    for args, message in [
        (["--configs", "digits,lenet6"], "available: .*lenet5"),
        (["--configs", "digits", "--set", "num_epoch=1"], 'Did you mean "num_epochs"'),
    ]:
        with pytest.raises(SystemExit) as stop:
            reproduce.main(
                [*args, "--workdir", str(tmp_path / "runs"), "--out", str(tmp_path / "results.md")]
            )
        assert stop.value.code == 2
        assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "runs").exists()


def test_an_interrupt_keeps_the_finished_rows_and_exits_like_train_py(
    reproduce, tmp_path, monkeypatch, capsys
):
    def run_config(name, seeds, workdir, overrides):
        if name == "lenet5":
            raise reproduce.training.TrainingInterrupted(7, signal.SIGINT, str(workdir / name))
        row = {"config": name, "model": "m", "dataset": "d", "parameters": 1, "epochs": 1, "command": "c"}
        return reproduce.summarized(row, {"0": {"accuracy": 90.0, "minutes": 1.0}})

    monkeypatch.setattr(reproduce, "run_config", run_config)
    out = tmp_path / "results.md"
    with pytest.raises(SystemExit) as stop:
        reproduce.main(
            ["--configs", "digits,lenet5", "--seeds", "0", "--workdir", str(tmp_path), "--out", str(out)]
        )
    assert stop.value.code == 128 + signal.SIGINT
    assert "SIGINT at step 7" in capsys.readouterr().err
    (row,) = json.loads(out.with_suffix(".json").read_text())
    assert row["config"] == "digits" and "| `digits` |" in out.read_text()
