"""Every config file: valid, documented with its command; the TFDS-dataset configs run on tiny local data."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from datafiles import cifar10_splits, write_cifar10_archive, write_mnist_split

from jaxcnn.training import train_and_evaluate, validate_config

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
NAMES = sorted(p.stem for p in CONFIGS.glob("*.py"))


@pytest.fixture(autouse=True)
def experiments_on_path(monkeypatch):
    """As when experiments/train.py runs: configs import each other as `configs.NAME`."""
    monkeypatch.syspath_prepend(str(CONFIGS.parent))


def load(name):
    spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_design_configs_exist():
    assert {"lenet5", "compact", "simple_cnn", "resnet20", "digits", "mnist", "cifar10"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_valid_and_documented(name):
    module = load(name)
    validate_config(module.get_config())
    command = f"python experiments/train.py --config experiments/configs/{name}.py --workdir runs/"
    assert command in module.__doc__, f"{name}.py's docstring must give the command that runs it"


def _tiny_run(config, tmp_path):
    """Four steps: the configs' warm-up (hundreds of steps) is shortened with a notice, as for a user's
    `--config.num_steps=4`."""
    config.num_steps, config.num_epochs = 4, 1
    config.batch_size, config.eval.batch_size = 8, 8
    config.log_every, config.checkpoint_every = 2, 4
    return train_and_evaluate(config, tmp_path / "run", handle_signals=False)


def test_mnist_config_runs_on_tiny_idx_files(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for split, count in (("train", 40), ("test", 16)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_mnist_split(tmp_path, split, images, rng.integers(0, 10, count).astype(np.uint8))
    monkeypatch.setenv("JAXCNN_MNIST_DIR", str(tmp_path))
    result = _tiny_run(load("mnist").get_config(), tmp_path)
    assert result.dataset == "mnist" and result.steps == 4 and 0 <= result.test_accuracy <= 1


def test_cifar10_config_runs_on_a_tiny_archive(tmp_path, monkeypatch):
    write_cifar10_archive(tmp_path / "cifar-10-binary.tar.gz", cifar10_splits(8, 8))
    monkeypatch.setenv("JAXCNN_CIFAR10_DIR", str(tmp_path))
    result = _tiny_run(load("cifar10").get_config(), tmp_path)
    assert result.dataset == "cifar10" and result.steps == 4 and np.isfinite(result.test_loss)
