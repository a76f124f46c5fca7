"""The registry: create, available, register, and their errors."""

import functools
import importlib
import json
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import layers, models
from jaxcnn import nnx_layers as L


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
    models.registry.MODELS.unregister("tiny_for_tests")


def test_available_lists_the_foundation_models():
    assert {"lenet5", "simple_cnn", "allconv", "compact"} <= set(models.available())
    assert models.available() == sorted(models.available())


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="unknown model name 'lenet6'.*lenet5"):
        models.create("lenet6")


def test_unknown_keyword_lists_accepted():
    with pytest.raises(ValueError, match="takes no argument.*widht.*accepts.*activation"):
        models.create("lenet5", widht=3)


@pytest.mark.parametrize(
    "num_classes, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)]
)
@pytest.mark.parametrize("create", [models.create, functools.partial(models.create_nnx, rngs=nnx.Rngs(0))])
def test_bad_num_classes(create, num_classes, error):
    with pytest.raises(error, match="num_classes"):
        create("lenet5", num_classes=num_classes)


def test_register_a_user_model_and_pass_kwargs(registered_tiny):
    model = models.create(registered_tiny, num_classes=3, width=2)
    x = jnp.ones((2, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x)
    assert model.apply(variables, x).shape == (2, 3)
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 2)
    assert models.arguments(registered_tiny) == {"width"}  # besides num_classes


def test_register_as_decorator_and_partial(registered_tiny):
    factory = models.register("tiny_wide_for_tests", functools.partial(TinyNet, width=8))
    try:
        assert models.create("tiny_wide_for_tests").width == 8
        assert "tiny_wide_for_tests" in models.available()
    finally:
        models.registry.MODELS.unregister("tiny_wide_for_tests")
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


class TinyNNXNet(nnx.Module):
    def __init__(self, num_classes=10, *, input_shape=(8, 8, 1), width=4, rngs: nnx.Rngs):
        self.conv = L.Conv(input_shape[-1], width, 3, rngs=rngs)
        self.pool, self.fc = L.GlobalAvgPool(), L.Dense(width, num_classes, rngs=rngs)

    def __call__(self, x):
        return self.fc(self.pool(jax.nn.relu(self.conv(x))))


@pytest.fixture
def registered_tiny_nnx():
    models.register("tiny_nnx_for_tests")(TinyNNXNet)
    yield "tiny_nnx_for_tests"
    models.registry.MODELS.unregister("tiny_nnx_for_tests")


def test_create_nnx_builds_the_zoo_model_initialised():
    model = models.create_nnx("lenet5", num_classes=3, rngs=nnx.Rngs(0))
    assert isinstance(model, models.LeNet5) and model.fc3.kernel.shape == (84, 3)
    assert model(jnp.ones((2, 28, 28, 1))).shape == (2, 3)
    wide = models.create_nnx("lenet5", rngs=nnx.Rngs(0), input_shape=(32, 32, 3))  # the first dense is sized
    assert wide.conv1.kernel.shape == (5, 5, 3, 6) and wide.fc1.kernel.shape == (16 * 6 * 6, 120)
    with pytest.raises(TypeError, match="rngs must be a flax.nnx.Rngs"):
        models.create_nnx("lenet5", rngs=0)
    with pytest.raises(ValueError, match="unknown model name 'lenet6'.*lenet5"):
        models.create_nnx("lenet6", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="takes no argument.*widht"):
        models.create_nnx("lenet5", widht=3, rngs=nnx.Rngs(0))


def test_a_registered_nnx_model_serves_both_apis(registered_tiny_nnx):
    assert models.arguments(registered_tiny_nnx) == {"width"}
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 1)), jnp.float32)
    model = models.create_nnx(registered_tiny_nnx, num_classes=3, width=2, rngs=nnx.Rngs(0))
    linen = models.create(registered_tiny_nnx, num_classes=3, width=2)
    assert isinstance(linen, models.LinenModel)
    variables = models.linen_variables(model)
    assert variables["params"]["conv"]["kernel"].shape == (3, 3, 1, 2)
    np.testing.assert_array_equal(linen.apply(variables, x), model(x))


def test_a_registered_linen_model_is_wrapped_for_nnx(registered_tiny):
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 1)), jnp.float32)
    model = models.create_nnx(
        registered_tiny, num_classes=3, width=2, rngs=nnx.Rngs(0), input_shape=(8, 8, 1)
    )
    assert isinstance(model, nnx.bridge.ToNNX)
    variables = models.linen_variables(model)  # the Linen module's own variables
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 1, 2)
    expected = models.create(registered_tiny, num_classes=3, width=2).apply(variables, x)
    np.testing.assert_array_equal(model(x, train=False), expected)
    with pytest.raises(ValueError, match="is a Linen module: create_nnx needs its input_shape"):
        models.create_nnx(registered_tiny, rngs=nnx.Rngs(0))


# After `import jaxcnn.models` alone: each registered model's name and the class it builds.
_REGISTERED_BY_THE_PACKAGE = """
import json
import jaxcnn.models
from jaxcnn.models.registry import MODELS, _target
print(json.dumps({n: f"{_target(MODELS.get(n)).__module__}.{_target(MODELS.get(n)).__qualname__}"
                  for n in MODELS.names()}))
"""


def _zoo_classes(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *_zoo_classes(sub))]


def test_every_model_a_module_of_models_defines_is_available():
    """`import jaxcnn.models` registers every model of its modules (a new module needs no list entry)."""
    run = subprocess.run(
        [sys.executable, "-c", _REGISTERED_BY_THE_PACKAGE], capture_output=True, text=True, check=True
    )
    registered = json.loads(run.stdout)
    for path in Path(models.__file__).parent.glob(
        "*.py"
    ):  # each on its own, as a test or a user might import it
        if path.stem != "__init__":
            importlib.import_module(f"jaxcnn.models.{path.stem}")
    by_the_modules = {
        name: factory
        for name, factory in ((n, models.registry.MODELS.get(n)) for n in models.available())
        if models.registry._target(factory).__module__.startswith("jaxcnn.models.")
    }
    assert sorted(set(by_the_modules) - set(registered)) == []
    zoo = [c for c in _zoo_classes(models.ZooModel) if c.__module__.startswith("jaxcnn.models.")]
    leaves = [c for c in zoo if not set(c.__subclasses__()) & set(zoo)]  # not bases such as ResidualNetwork
    assert sorted({f"{c.__module__}.{c.__qualname__}" for c in leaves} - set(registered.values())) == []


def test_a_users_torchvision_family_saves_and_loads_its_models(registered_tiny_nnx):
    families = models.torch_weights.TORCHVISION_FAMILIES
    with pytest.raises(
        ValueError, match="has no torchvision counterpart; load_torch_state_dict supports Conv"
    ):
        models.load_torch_state_dict(registered_tiny_nnx, {})

    @models.torch_weights.torchvision_family(TinyNNXNet, classifier="fc.weight", first_conv="conv.weight")
    def tiny_names(model, paths):  # TinyNNXNet's twin names its modules as it does
        return {path: ".".join(path) for path in paths}

    try:
        model = models.create_nnx(registered_tiny_nnx, num_classes=3, width=2, rngs=nnx.Rngs(0))
        state_dict = models.save_torch_state_dict(registered_tiny_nnx, model, width=2)
        assert sorted(state_dict) == ["conv.bias", "conv.weight", "fc.bias", "fc.weight"]
        kernel, dense = np.asarray(model.conv.kernel[...]), np.asarray(model.fc.kernel[...])
        np.testing.assert_array_equal(state_dict["conv.weight"], kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        np.testing.assert_array_equal(state_dict["fc.weight"], dense.T)  # (in, out) -> (out, in)
        variables = models.load_torch_state_dict(registered_tiny_nnx, state_dict, width=2)
        jax.tree.map(np.testing.assert_array_equal, variables, models.linen_variables(model))
        with pytest.raises(
            ValueError, match="save_torch_state_dict supports .*ResNet, TinyNNXNet, UNetSmall"
        ):
            models.save_torch_state_dict("lenet5", {})
    finally:
        families.unregister("TinyNNXNet")
