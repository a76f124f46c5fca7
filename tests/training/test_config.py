"""Config defaults, locking and validation."""

import pytest

from jaxcnn.training import default_config, validate_config

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


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("parallel", "model", "config.parallel"),
        ("optimizer", "rmsprop", "config.optimizer"),
        ("schedule", "step", "config.schedule"),
        ("batch_size", 0, "config.batch_size"),
        ("log_every", 0, "config.log_every"),
        ("num_steps", -1, "config.num_steps"),
        ("learning_rate", -0.1, "config.learning_rate"),
        ("momentum", 1.0, "config.momentum"),
        ("label_smoothing", 1.0, "config.label_smoothing"),
        ("dtype", "float64", "config.dtype"),
        ("eval_shift", -1, "config.eval_shift"),
    ],
)
def test_bad_values_name_the_key(key, value, match):
    config = default_config()
    config.unlock()
    config[key] = value
    with pytest.raises(ValueError, match=match):
        validate_config(config)


def test_a_run_needs_epochs_or_steps():
    config = default_config()
    config.num_epochs = 0
    with pytest.raises(ValueError, match="num_epochs or config.num_steps"):
        validate_config(config)


@pytest.mark.parametrize(
    "key, value",
    [
        ("learning_rate", float("nan")),
        ("weight_decay", float("inf")),
        ("dp_clip_norm", float("inf")),
        ("momentum", float("-inf")),
        ("model_kwargs.dropout_rate", float("nan")),
    ],
)
def test_non_finite_float_values_are_refused_by_name(key, value):
    config = default_config()
    config.unlock()
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
