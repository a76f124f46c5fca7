"""The registry: create, available, register, and their errors."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxcnn import layers, models


class TinyNet(nn.Module):
    num_classes: int = 10
    width: int = 4

    @nn.compact
    def __call__(self, x, train=False):
        x = layers.GlobalAvgPool()(nn.relu(layers.Conv(self.width, 3)(x)))
        return layers.Dense(self.num_classes)(x)


@pytest.fixture
def registered_tiny():
    models.register("tiny_for_tests", TinyNet)
    yield "tiny_for_tests"
    models.registry._MODELS.pop("tiny_for_tests", None)


def test_available_lists_the_foundation_models():
    assert {"lenet5", "simple_cnn", "allconv", "compact"} <= set(models.available())
    assert models.available() == sorted(models.available())


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown model name 'lenet6'.*lenet5"):
        models.create("lenet6")


def test_unknown_keyword_lists_accepted():
    with pytest.raises(ValueError, match="takes no argument.*widht.*accepts.*activation"):
        models.create("lenet5", widht=3)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        models.create("lenet5", num_classes=num_classes)


def test_register_a_user_model_and_pass_kwargs(registered_tiny):
    model = models.create(registered_tiny, num_classes=3, width=2)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).shape == (2, 3)
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 2)
    assert models.arguments(registered_tiny) == {"num_classes", "width"}


def test_register_as_decorator_and_partial(registered_tiny):
    factory = models.register("tiny_wide_for_tests", functools.partial(TinyNet, width=8))
    try:
        assert models.create("tiny_wide_for_tests").width == 8
        assert "tiny_wide_for_tests" in models.available()
    finally:
        models.registry._MODELS.pop("tiny_wide_for_tests")
    assert isinstance(factory, functools.partial)


def test_registering_a_taken_name_raises_unless_overwrite(registered_tiny):
    class Other(TinyNet):
        pass

    with pytest.raises(ValueError, match="already registered"):
        models.register(registered_tiny, Other)
    models.register(registered_tiny, Other, overwrite=True)
    assert isinstance(models.create(registered_tiny), Other)


def test_re_registering_the_same_definition_is_allowed(registered_tiny):
    models.register(registered_tiny)(TinyNet)  # e.g. a notebook cell run twice


@pytest.mark.parametrize("name", ["", None, 3])
def test_register_needs_a_name(name):
    with pytest.raises(TypeError, match="name"):
        models.register(name)
