"""experiments/data_benchmark.py runs its rounds and prints the ratios with their control."""

import importlib.util
import re
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.mark.slow
def test_a_short_run_prints_the_loop_the_control_and_the_cpu_time(capsys):
    spec = importlib.util.spec_from_file_location("data_benchmark", EXPERIMENTS / "data_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(
        ["--dataset", "digits", "--model", "compact", "--batch_size", "32", "--steps", "8", "--rounds", "2",
         "--steps_per_call", "8"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert (
        len(re.findall(r"^round \d: bare [\d,]+, loop [\d,]+, bare again [\d,]+ examples/s", out, re.M)) == 2
    )
    assert re.search(r"loop at \d+\.\d% \(quartiles .*\) of the bare step's throughput; control", out)
    assert "CPU time of the process, bare / loop:" in out
    assert re.search(r"the loop's CPU time beyond the bare step's: -?\d+ us per optimizer step", out)
    assert re.search(r"does nothing: \d+ us at steps_per_call 1, \d+ us at steps_per_call 8$", out, re.M)
