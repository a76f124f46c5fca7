"""Fine-tuning: a new head, weights moved between models, runs started from a workdir's weights with part
of the network frozen (no update, BatchNorm statistics fixed), on digits with the small `compact` CNN."""

import logging
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcnn import models
from jaxcnn import nnx_layers as L
from jaxcnn.training import create_model, default_config, finetune, train_and_evaluate
from jaxcnn.training.checkpoint import saved_steps


def compact(num_classes=10, seed=0):
    return models.create_nnx("compact", num_classes=num_classes, input_shape=(8, 8, 1), rngs=nnx.Rngs(seed))


def test_replace_head_keeps_the_backbone():
    model = compact()
    before = models.linen_variables(model)
    assert models.replace_head(model, 3, rngs=nnx.Rngs(1)) is model
    after = models.linen_variables(model)
    assert after["params"]["fc"]["kernel"].shape == (64, 3) and after["params"]["fc"]["bias"].shape == (3,)
    del before["params"]["fc"], after["params"]["fc"]
    jax.tree.map(np.testing.assert_array_equal, after, before)
    model.eval()
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        models.replace_head(model, 0, rngs=nnx.Rngs(1))


def test_transfer_variables_skips_only_what_it_is_told_and_lists_every_mismatch():
    source, target = models.linen_variables(compact(10)), models.linen_variables(compact(4, seed=1))
    merged, skipped = models.transfer_variables(target, source, skip_mismatched="params/fc/")
    assert skipped == ["params/fc/bias", "params/fc/kernel"]
    np.testing.assert_array_equal(merged["params"]["fc"]["kernel"], target["params"]["fc"]["kernel"])
    np.testing.assert_array_equal(merged["params"]["conv1"]["kernel"], source["params"]["conv1"]["kernel"])
    del source["batch_stats"]["bn1"]
    source["params"]["extra"] = {"kernel": np.zeros(3)}
    with pytest.raises(ValueError) as error:
        models.transfer_variables(target, source)
    message = str(error.value)
    assert "missing (2): batch_stats/bn1/mean, batch_stats/bn1/var" in message
    assert "unexpected (1): params/extra/kernel" in message
    assert (
        "shape mismatches (2): params/fc/bias: expected (4,), got (10,), params/fc/kernel: expected"
        in message
    )


def digits_config(**overrides):
    config = default_config()
    config.update_from_flattened_dict(
        {"model": "compact", "dataset": "digits", "batch_size": 32, "num_steps": 4, "optimizer": "adam",
         "learning_rate": 1e-2, "log_every": 2, "checkpoint_every": 4, "train_examples": 256,
         "test_examples": 64, **overrides}
    )  # fmt: skip
    return config


def saved_variables(workdir):
    return finetune.read_weights(workdir, "compact")


@pytest.mark.slow
def test_run_from_a_workdir_with_a_frozen_backbone(tmp_path, caplog):
    train_and_evaluate(digits_config(), tmp_path / "pretrained")
    pretrained = saved_variables(tmp_path / "pretrained")
    with caplog.at_level(logging.INFO):
        train_and_evaluate(
            digits_config(
                **{"finetune.init_from": str(tmp_path / "pretrained"), "finetune.freeze": "backbone"}
            ),
            tmp_path / "tuned",
        )
    tuned = saved_variables(tmp_path / "tuned")
    assert f"finetune: loaded 89,506 parameters from {tmp_path / 'pretrained'}" in caplog.text
    assert "finetune: 88,856 parameters frozen ('backbone'), 650 trained; 6 BatchNorm layers" in caplog.text
    fc_tuned, fc_pretrained = tuned["params"].pop("fc"), pretrained["params"].pop("fc")
    assert not np.array_equal(fc_tuned["kernel"], fc_pretrained["kernel"])  # the head trained
    jax.tree.map(np.testing.assert_array_equal, tuned, pretrained)  # weights and statistics did not move


@pytest.mark.slow
def test_frozen_pattern_trains_the_rest_and_its_statistics_move(tmp_path):
    config = digits_config(**{"finetune.freeze": "conv1|bn1"})
    train_and_evaluate(config, tmp_path)
    start = models.linen_variables(create_model("compact", 10, (8, 8, 1), seed=0))  # the run's start
    tuned = saved_variables(tmp_path)
    for part in ("params", "batch_stats"):
        jax.tree.map(np.testing.assert_array_equal, tuned[part]["bn1"], start[part]["bn1"])
        leaf = "mean" if part == "batch_stats" else "scale"
        assert not np.array_equal(tuned[part]["bn2"][leaf], start[part]["bn2"][leaf])
    np.testing.assert_array_equal(tuned["params"]["conv1"]["kernel"], start["params"]["conv1"]["kernel"])


def test_head_of_another_shape_is_kept_and_said(tmp_path):
    train_and_evaluate(digits_config(num_steps=2, checkpoint_every=2), tmp_path)
    model = compact(num_classes=4, seed=3)
    head = np.asarray(model.fc.kernel[...])
    lines = finetune.load_into(model, tmp_path, "compact")
    assert "kept the new params/fc/bias, params/fc/kernel" in lines[1]
    np.testing.assert_array_equal(model.fc.kernel[...], head)
    np.testing.assert_array_equal(
        model.conv1.kernel[...], saved_variables(tmp_path)["params"]["conv1"]["kernel"]
    )


def test_init_from_a_workdir_whose_newest_checkpoint_is_damaged_takes_the_one_before(tmp_path, caplog):
    train_and_evaluate(digits_config(num_steps=4, checkpoint_every=2), tmp_path / "run")
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.copytree(checkpoints / "2", tmp_path / "alone" / "2")
    expected = saved_variables(tmp_path / "alone")
    for path in (checkpoints / "4" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        weights = saved_variables(tmp_path / "run")
    jax.tree.map(np.testing.assert_array_equal, weights, expected)
    assert f"Skipping unreadable checkpoint {checkpoints / '4'}" in caplog.text
    assert saved_steps(checkpoints) == [2, 4]  # another run's checkpoints: nothing is moved


def test_an_empty_safetensors_file_is_named(tmp_path):
    path = tmp_path / "resnet18.safetensors"  # truncated files: tests/models/test_torch_weights.py
    path.touch()
    with pytest.raises(ValueError, match=f"^{path} is not a readable .safetensors file: it is empty"):
        finetune.read_weights(path, "resnet18")


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"finetune.init_from": "/nonexistent"}, "neither a .safetensors file"),
        ({"finetune.freeze": "("}, "config.finetune.freeze must be a regular expression"),
        ({"finetune.freeze": ".*"}, "freezes every parameter"),
        ({"finetune.freeze": "fc", "ensemble.size": 2}, "config.finetune needs config.ensemble.size 1"),
    ],
)
def test_bad_finetune_settings_are_named(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=match):
        train_and_evaluate(digits_config(**overrides), tmp_path)


def test_a_frozen_batch_norm_normalises_with_its_running_statistics_in_training():
    bn = L.BatchNorm(3, rngs=nnx.Rngs(0))
    bn.mean[...], bn.var[...] = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 1.0])
    x = np.random.default_rng(0).standard_normal((8, 2, 2, 3)).astype(np.float32)
    bn.eval()
    expected = np.asarray(bn(x))
    bn.frozen = True
    bn.train()
    np.testing.assert_array_equal(bn(x), expected)
    np.testing.assert_array_equal(bn.mean[...], [1.0, -2.0, 0.5])  # not moved
    bn.frozen = False
    assert not np.array_equal(bn(x), expected)  # batch statistics again
