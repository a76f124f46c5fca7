"""experiments/reproduce.py: seeds run, statistics and the table, and finished runs are not redone."""

import importlib.util
import json
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


def test_unknown_config_names_the_available_ones(reproduce):
    with pytest.raises(ValueError, match="available: .*lenet5"):
        reproduce.load_config("lenet6", {})
