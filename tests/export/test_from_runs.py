"""Exports of a trained run, from its workdir or checkpoint: the artifact gives the run's own evaluation."""

from __future__ import annotations

import json
import shutil

import numpy as np
import optax
import pytest
from conftest import train_digits

from jaxcnn import data, export

pytestmark = pytest.mark.slow  # a short training run first


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    return workdir, train_digits(workdir)


def test_the_artifact_of_a_workdir_scores_the_runs_test_loss_and_accuracy(run, tmp_path):
    workdir, result = run
    servable = export.from_workdir(workdir)
    assert servable.info.class_names == tuple(result["class_names"]) and servable.info.input_shape == (
        8,
        8,
        1,
    )
    export.export_stablehlo(servable, tmp_path / "m.stablehlo", raw_images=True)
    exported, info = export.load_stablehlo(tmp_path / "m.stablehlo")
    test = data.load("digits", "test", num_examples=64)
    assert (info.mean, info.std, info.model) == (test.mean, test.std, "compact")
    logits = exported.call(test.images)  # uint8, as the run's pipeline reads them
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, test.labels).mean()
    accuracy = (np.argmax(logits, -1) == test.labels).mean()
    assert accuracy == pytest.approx(result["test_accuracy"], abs=1e-7)
    assert float(loss) == pytest.approx(result["test_loss"], abs=1e-5)


def test_a_checkpoint_exports_the_same_model_as_its_workdir(run, tmp_path):
    workdir, _ = run
    from_workdir = export.from_workdir(workdir)
    from_checkpoint = export.from_checkpoint(
        workdir / "checkpoints", "compact", input_shape=(8, 8, 1), num_classes=10
    )
    x = np.random.default_rng(0).standard_normal((3, 8, 8, 1)).astype(np.float32)
    np.testing.assert_array_equal(from_checkpoint.model(x), from_workdir.model(x))
    assert from_checkpoint.info.class_names == () and from_checkpoint.info.mean == ()


def test_what_is_not_a_single_models_run_is_named(run, tmp_path):
    workdir, _ = run
    with pytest.raises(ValueError, match="config.json"):
        export.from_workdir(tmp_path)
    with pytest.raises(ValueError, match="checkpoint"):
        export.from_checkpoint(tmp_path, "compact", input_shape=(8, 8, 1), num_classes=10)
    with pytest.raises(ValueError, match="num_classes or class_names"):
        export.from_checkpoint(workdir, "compact", input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="do not fit"):
        export.from_checkpoint(workdir, "compact", input_shape=(8, 8, 1), num_classes=3)
    ensemble = tmp_path / "ensemble"
    shutil.copytree(workdir, ensemble)
    config = json.loads((ensemble / "config.json").read_text())
    config["ensemble"]["size"] = 2
    (ensemble / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ensemble of 2"):
        export.from_workdir(ensemble)
