"""Config defaults, locking and validation."""

import json

import pytest

from jaxcnn import data
from jaxcnn.training import (
    OPTIMIZERS,
    SCHEDULES,
    default_config,
    resumable_keys,
    train_and_evaluate,
    validate_config,
)
from jaxcnn.training.config import MOVED, SECTIONS, unknown_key

DESIGN_KEYS = {
    "model",
    "dataset",
    "batch_size",
    "num_epochs",
    "num_steps",
    "learning_rate",
    "optimizer",
    "seed",
    "log_every",
    "parallel",
    "train_examples",
    "test_examples",
    "checkpoint_every",
}


def test_defaults_hold_every_design_key_and_validate():
    config = default_config()
    assert DESIGN_KEYS <= set(config)
    validate_config(config)


def test_unknown_key_is_refused():
    config = default_config()
    with pytest.raises(AttributeError, match="lerning_rate"):
        config.lerning_rate = 0.1


def test_a_key_of_jaxcnn_0_1_is_told_where_it_moved():
    config = default_config().unlock()
    config.eval_every = 3
    with pytest.raises(ValueError, match=r"unknown keys config\.eval_every \(now config\.eval\.every\)"):
        validate_config(config)
    for new_key in MOVED.values():  # every hint leads to a real key
        section, field = new_key.split(".")
        assert field in default_config()[section]


@pytest.mark.parametrize(
    "key, described",
    [
        ("optim.warmpu_steps", "config.optim.warmpu_steps (did you mean config.optim.warmup_steps?)"),
        ("optimm.momentum", "config.optimm.momentum (did you mean config.optim.momentum?)"),
        ("warmup_steps", "config.warmup_steps (now config.optim.warmup_steps)"),
        ("model_kwargs.width", "config.model_kwargs.width"),  # any name may be the model's
    ],
)
def test_an_unknown_key_is_shown_with_the_full_path_of_the_key_it_is_closest_to(key, described):
    assert unknown_key(key) == described


def test_every_section_holds_its_owners_defaults():
    """A section's keys and defaults are its settings class's fields: one place for each."""
    config = default_config()
    for name, settings in SECTIONS.items():
        assert settings.from_config(config[name], name) == settings()
    assert {"augment", "eval", "optim", "dp", "ensemble", "ema", "loss", "checkpoints", "profile"} <= set(
        SECTIONS
    )


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("parallel", "model", "config.parallel"),
        ("optimizer", "rmsprop", "config.optimizer"),
        ("optim.schedule", "step", "config.optim.schedule"),
        ("batch_size", 0, "config.batch_size"),
        ("log_every", 0, "config.log_every"),
        ("num_steps", -1, "config.num_steps"),
        ("learning_rate", -0.1, "config.learning_rate"),
        ("optim.momentum", 1.0, "config.optim.momentum"),
        ("loss.label_smoothing", 1.0, "config.loss.label_smoothing"),
        ("compute.dtype", "float64", "config.compute.dtype"),
        ("compute.impl", "fast", "config.compute.impl"),
        ("eval.shift", -1, "config.eval.shift"),
        ("augment.erase_probability", 2.0, "config.augment.erase_probability"),
        ("ensemble.size", 0, "config.ensemble.size"),
        ("optim.accumulate_steps", 0, "config.optim.accumulate_steps"),
        ("profile.steps", -1, "config.profile.steps"),
        ("seed", 99999999999999999999, r"config.seed must be an int >= 0 and <= 4294967295"),
    ],
)
def test_bad_values_name_the_key(key, value, match):
    config = default_config()
    config.update_from_flattened_dict({key: value})
    with pytest.raises((ValueError, TypeError), match=match):
        validate_config(config)


def test_registered_names_are_the_accepted_ones():
    config = default_config()
    for key, names in (("optimizer", OPTIMIZERS.names()), ("dataset", data.available())):
        config[key] = "no_such_name"
        with pytest.raises(ValueError, match=f"config.{key} must be one of .*{names[0]}"):
            validate_config(config)
        config[key] = default_config()[key]
    assert SCHEDULES.names() == ["constant", "cosine", "warmup_cosine"]


def test_what_may_change_when_a_run_resumes():
    assert resumable_keys() == {
        "log_every", "checkpoint_every", "num_epochs", "num_steps", "overwrite", "checkpoints.keep",
        "steps_per_call",
        "eval.every", "eval.batch_size", "data.dir", "data.source", "data.workers", "data.bad_images",
        "profile.start_step", "profile.steps",
    }  # fmt: skip


def test_a_run_needs_epochs_or_steps():
    config = default_config()
    config.num_epochs = 0
    with pytest.raises(ValueError, match="num_epochs or config.num_steps"):
        validate_config(config)


@pytest.mark.parametrize(
    "key, value",
    [
        ("learning_rate", float("nan")),
        ("optim.weight_decay", float("inf")),
        ("dp.clip_norm", float("inf")),
        ("optim.momentum", float("-inf")),
        ("model_kwargs.dropout_rate", float("nan")),
    ],
)
def test_non_finite_float_values_are_refused_by_name(key, value):
    config = default_config()
    config.model_kwargs.unlock()
    holder, _, name = key.rpartition(".")
    (config[holder] if holder else config)[name] = value
    with pytest.raises(ValueError, match=rf"config\.{key} must be a finite number, got {value!r}"):
        validate_config(config)


def test_a_non_finite_float_inside_a_sequence_is_named_by_its_index():
    config = default_config()
    config.model_kwargs.unlock()
    config.model_kwargs.widths = (1.0, float("inf"))
    with pytest.raises(ValueError, match=r"config\.model_kwargs\.widths\.1 must be a finite number, got inf"):
        validate_config(config)


def test_a_short_run_shortens_its_warmup_instead_of_stopping(tmp_path, caplog):
    """What a newcomer tries first: `--config.num_steps=20` on a config that warms up for longer."""
    config = default_config()
    config.model, config.dataset, config.batch_size, config.num_steps = "simple_cnn", "digits", 32, 6
    config.optim.schedule, config.optim.warmup_steps = "warmup_cosine", 100
    with caplog.at_level("WARNING"):
        result = train_and_evaluate(config, tmp_path, handle_signals=False)
    assert result.steps == 6 and "warming up over 0 instead" in caplog.text
    assert json.loads((tmp_path / "config.json").read_text())["optim"]["warmup_steps"] == 100
