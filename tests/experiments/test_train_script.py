"""experiments/train.py as users run it: a subprocess, killed with SIGKILL and restarted."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lock_holder import hold_lock

ROOT = Path(__file__).resolve().parents[2]
TIMING_KEYS = {"examples_per_sec"}
ARGS = [
    "--config=experiments/configs/lenet5.py",
    "--config.model=compact",
    "--config.dataset=digits",
    "--config.batch_size=32",
    "--config.num_steps=60",
    "--config.optim.warmup_steps=10",
    "--config.log_every=3",
    "--config.checkpoint_every=5",
]


def _command(workdir, *extra):
    return [sys.executable, "experiments/train.py", f"--workdir={workdir}", *ARGS, *extra]


def _run(workdir, *extra, **env):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    return subprocess.run(
        _command(workdir, *extra), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def _logged(workdir):
    lines = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k not in TIMING_KEYS} for line in lines]


def _steps_logged(workdir):
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(x)["step"] for x in path.read_text().splitlines()] if path.exists() else []


def _committed(workdir):
    """The steps of the checkpoints Orbax has finished (it renames a temporary directory to the step)."""
    directory = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_rerun_is_bit_identical(tmp_path):
    # The whole run reads its data in the main process; the killed and resumed one with 2 Grain worker
    # processes: the same batches, so the same metrics.
    extra = ("--config.data.workers=2",)
    whole = _run(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert "test accuracy" in whole.stdout and "metrics.jsonl" in whole.stdout

    # Kill at a random logged step once the first checkpoint (step 5, written in the background) is
    # committed, before the end.
    kill_after = random.Random().randrange(6, 55)
    process = subprocess.Popen(
        _command(tmp_path / "killed", *extra),
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        if _committed(tmp_path / "killed") and any(
            step >= kill_after for step in _steps_logged(tmp_path / "killed")
        ):
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before step {kill_after}"

    resumed = _run(tmp_path / "killed", *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout
    assert _logged(tmp_path / "killed") == _logged(tmp_path / "whole")


def _signal_when(workdir, signum, ready):
    """Runs the script in `workdir`, sends it `signum` once `ready()`; its exit code and stderr."""
    process = subprocess.Popen(
        _command(workdir),
        cwd=ROOT,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline and not ready():
        time.sleep(0.01)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path):
    returncode, stderr = _signal_when(tmp_path, signal.SIGTERM, lambda: _steps_logged(tmp_path))
    assert returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGTERM at step" in stderr and "run the same command again to resume" in stderr
    stopped_at = int(stderr.split("SIGTERM at step ")[1].split(":")[0])
    assert _committed(tmp_path)[-1] == stopped_at


def _assert_one_error_line(result, message):
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr.splitlines() == [f"error: {message}", "(set JAXCNN_TRACEBACK=1 for the traceback)"]


def test_a_bad_flag_value_is_a_clear_error(tmp_path):
    result = _run(tmp_path, "--config.parallel=everything")
    assert result.returncode != 0
    assert "config.parallel must be one of" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "flag, message",
    [
        (
            "--config.lerning_rate=0.1",
            "config has unknown keys config.lerning_rate (did you mean config.learning_rate?)",
        ),
        ("--config.model_kwargs.width=2", "config has unknown keys config.model_kwargs.width"),
        (
            "--config.optimm.momentum=0.5",
            "config has unknown keys config.optimm.momentum (did you mean config.optim.momentum?)",
        ),
        (
            "--config.optim.warmpu_steps=5",
            "config has unknown keys config.optim.warmpu_steps (did you mean config.optim.warmup_steps?)",
        ),
        (
            "--config=experiments/configs/no_such_file.py",
            "--config: OSError: [Errno 2] No such file or directory: 'experiments/configs/no_such_file.py'",
        ),
    ],
)
def test_every_config_error_is_one_line(tmp_path, flag, message):
    _assert_one_error_line(_run(tmp_path, flag), message)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_workdir_in_use_is_refused_in_one_line_touching_nothing(tmp_path):
    holder = hold_lock(tmp_path)
    try:
        result = _run(tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 2, result.stderr[-3000:]
    assert f"is in use by another run (pid {holder.pid} on " in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_the_traceback_is_there_when_asked_for(tmp_path):
    result = _run(tmp_path, "--config.no_such_key=1", JAXCNN_TRACEBACK="1")
    assert result.returncode == 1 and "Traceback" in result.stderr and "no_such_key" in result.stderr


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(tmp_path):
    # Once the workdir is locked, the script loads the data and compiles: it has not begun training.
    returncode, stderr = _signal_when(tmp_path, signal.SIGINT, lambda: (tmp_path / ".lock").exists())
    assert returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert (
        stderr.splitlines()[-1] == "SIGINT: stopped outside training; run the same command again to continue"
    )


# The script with a full disk: Orbax's save, and TensorBoard's flush as the run closes, raise ENOSPC.
_DISK_FULL = """
import errno, runpy, sys
import orbax.checkpoint, tensorboardX

def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

orbax.checkpoint.CheckpointManager.save = disk_full
tensorboardX.SummaryWriter.close = disk_full
sys.argv[0] = "experiments/train.py"
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_workdir_not_jaxcnn_s_an_empty_one_and_a_full_disk_are_one_line_each(tmp_path):
    project = tmp_path / "myproject"
    (project / "plots").mkdir(parents=True)
    (project / "config.json").write_text('{"name": "my project"}')
    (project / "plots" / "figure.png").write_text("fig")
    _assert_one_error_line(
        _run(project),
        f"workdir {project} is not empty and holds no jaxcnn run (config.json, plots); pick a new or empty "
        "--workdir, or pass --config.overwrite=True to run there (it replaces only the files jaxcnn writes)",
    )
    assert (project / "plots" / "figure.png").read_text() == "fig"
    _assert_one_error_line(
        _run(""), "--workdir is empty; name a directory of the run's own, e.g. runs/lenet5"
    )

    full = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, f"--workdir={tmp_path / 'full'}", *ARGS],
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    error, hint = full.stderr.splitlines()[-2:]
    assert error.startswith(f"error: not enough space on the disk of {tmp_path / 'full' / 'checkpoints'}")
    assert (
        error.endswith("(it resumes from the start)") and hint == "(set JAXCNN_TRACEBACK=1 for the traceback)"
    )
