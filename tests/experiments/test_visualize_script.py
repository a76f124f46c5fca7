"""experiments/visualize.py as users run it, on a tiny digits run trained in the test."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxcnn import models, training

ROOT = Path(__file__).resolve().parents[2]
PICTURES = ("filters.png", "feature_maps.png", "confusion_matrix.png", "misclassified.png")


def _visualize(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "experiments/visualize.py", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _script():
    """experiments/visualize.py as a module, for its functions."""
    spec = importlib.util.spec_from_file_location("visualize_script", ROOT / "experiments" / "visualize.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = training.default_config()
    config.model, config.dataset = "compact", "digits"
    config.batch_size, config.num_steps, config.log_every, config.checkpoint_every = 32, 6, 3, 4
    # The default run's schedule: the restore template must accept its warmup.
    config.optimizer, config.optim.schedule, config.optim.warmup_steps = "nesterov", "warmup_cosine", 5
    training.train_and_evaluate(config, workdir, handle_signals=False)
    return workdir


@pytest.mark.slow
def test_draws_the_pictures_of_the_newest_checkpoint(run_dir, tmp_path):
    result = _visualize("--workdir", run_dir, "--out", tmp_path / "plots", "--image", 3)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in PICTURES:
        path = tmp_path / "plots" / name
        assert path.stat().st_size > 1000, name
        assert str(path) in result.stdout
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_restores_the_trained_parameters_not_fresh_ones(run_dir):
    script = _script()
    config = script.load_config(run_dir)
    test_data = script.data.load("digits", "test")
    model, variables, step = script.restore(run_dir, config, test_data)
    assert variables is None  # a zoo model comes back as the NNX model holding the weights
    restored = models.linen_variables(model)
    fresh = models.linen_variables(training.create_model("compact", 10, (8, 8, 1), config.seed))
    assert step == 6
    assert restored["batch_stats"]  # compact's BatchNorm statistics come back too
    assert not (restored["params"]["conv1"]["kernel"] == fresh["params"]["conv1"]["kernel"]).all()


def test_a_directory_without_a_run_is_a_clear_error(tmp_path):
    result = _visualize("--workdir", tmp_path)
    assert result.returncode == 1
    assert "config.json not found" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_draws_member_0_of_an_ensemble_run(tmp_path):
    config = training.default_config()
    config.model, config.dataset, config.ensemble.size = "simple_cnn", "digits", 2
    config.batch_size, config.num_steps, config.log_every, config.checkpoint_every = 32, 3, 3, 3
    training.train_and_evaluate(config, tmp_path / "run", handle_signals=False)
    script = _script()
    model, _, step = script.restore(
        tmp_path / "run", script.load_config(tmp_path / "run"), script.data.load("digits", "test")
    )
    assert step == 3 and model.conv1.kernel.shape == (3, 3, 1, 32)  # no member axis
    paths = script.draw(tmp_path / "run", tmp_path / "plots")
    assert [path.name for path in paths] == list(PICTURES)
