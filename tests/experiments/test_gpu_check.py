"""experiments/gpu_check.sh: its dry run on the CPU runs every piece at a tiny size and leaves the figures
in $OUT, as the GPU machine's run will."""

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PIECES = ("env:gpu", "env:python", "benchmark", "data_benchmark:workers0", "data_benchmark:workers2",
          "data_benchmark:steps_per_call8", "resume:deterministic", "resume:default", "tests")  # fmt: skip


def _run(*args: str, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out)}
    # One CPU device, as a user runs it, not conftest's eight simulated ones.
    flags = [f for f in env.pop("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    return subprocess.run(
        ["bash", str(ROOT / "experiments" / "gpu_check.sh"), *args],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip


def test_an_unknown_argument_is_refused_with_the_usage(tmp_path):
    done = _run("--cpu", out=tmp_path)
    assert (
        done.returncode == 2 and "usage: bash experiments/gpu_check.sh [--dry-run | --wheels]" in done.stderr
    )
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_dry_run_runs_every_piece_and_writes_its_figures_to_out(tmp_path):
    done = _run("--dry-run", out=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "summary.txt").read_text().splitlines()
    assert [line.split(":")[0] for line in summary[:-1]] == [p.split(":")[0] for p in PIECES]
    assert all(f"{piece}: exit 0 in " in line for piece, line in zip(PIECES, summary, strict=False)), summary
    assert summary[-1].startswith("done in ")
    # At most 8 files: what the device tool brings back from $OUT.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "benchmark.json", "benchmark.txt", "data_benchmark.txt", "env.txt", "resume.txt", "summary.txt",
        "tests.txt",
    ]  # fmt: skip
    peers = json.loads((tmp_path / "benchmark.json").read_text())["models"]["lenet5"]["peers"]
    assert list(peers) == ["jaxcnn[bf16]", "flax[bf16]", "torch[bf16]"]
    assert (tmp_path / "data_benchmark.txt").read_text().count("of the bare step's throughput") == 3
    assert (tmp_path / "resume.txt").read_text().count(" passed") == 2
    assert " tests collected" in (tmp_path / "tests.txt").read_text()
