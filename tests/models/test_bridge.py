"""Every zoo model in both APIs: the same weights give the same logits in eval and train mode, BatchNorm
statistics move the same way, weights convert both ways (Linen variables <-> NNX state), and the NNX
models have the parameter counts their Linen forms are tested for.

The NNX model is `create_nnx`'s (built abstractly, then loaded), the Linen one `create`'s: two routes
to one architecture. Weights are numpy draws (`zoo_checks.fake_variables`), inputs a batch of 2 at
28x28 or 32x32: the numbers of the big nets are checked against PyTorch in test_torch_weights.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models
from jaxcnn import nnx_layers as L

# One image's shape for the equivalence tests, and (input shape, classes, parameters) for the counts:
# DESIGN's and torchvision's counts, the others as the model docstrings give them.
ZOO = {
    "lenet5": ((28, 28, 1), ((28, 28, 1), 10, 61_706)),
    "simple_cnn": ((28, 28, 1), ((28, 28, 1), 10, 824_458)),
    "compact": ((28, 28, 1), ((28, 28, 1), 10, 89_506)),
    "fastcnn": ((28, 28, 1), ((28, 28, 1), 10, 1_972_600)),
    "allconv": ((32, 32, 3), ((32, 32, 3), 10, 1_369_738)),
    "resnet20": ((32, 32, 3), ((32, 32, 3), 10, 269_722)),
    "resnet56": ((32, 32, 3), ((32, 32, 3), 10, 853_018)),
    "resnet18": ((32, 32, 3), ((224, 224, 3), 1000, 11_689_512)),
    "resnet34": ((32, 32, 3), ((224, 224, 3), 1000, 21_797_672)),
    "resnet50": ((32, 32, 3), ((224, 224, 3), 1000, 25_557_032)),
    "vgg11": ((32, 32, 3), ((224, 224, 3), 1000, 132_863_336)),
    "vgg11_bn": ((32, 32, 3), ((224, 224, 3), 1000, 132_868_840)),
    "vgg16": ((32, 32, 3), ((224, 224, 3), 1000, 138_357_544)),
    "vgg16_bn": ((32, 32, 3), ((224, 224, 3), 1000, 138_365_992)),
    "mobilenet_v2": ((32, 32, 3), ((224, 224, 3), 1000, 3_504_872)),
    "unet_small": ((28, 28, 1), ((28, 28, 1), 10, 116_906)),
    "resnet101": ((32, 32, 3), ((224, 224, 3), 1000, 44_549_160)),
    "resnet152": ((32, 32, 3), ((224, 224, 3), 1000, 60_192_808)),
    "resnext50_32x4d": ((32, 32, 3), ((224, 224, 3), 1000, 25_028_904)),
    "wide_resnet50_2": ((32, 32, 3), ((224, 224, 3), 1000, 68_883_240)),
    "densenet121": ((32, 32, 3), ((224, 224, 3), 1000, 7_978_856)),
    "efficientnet_b0": ((32, 32, 3), ((224, 224, 3), 1000, 5_288_548)),
    "convnext_tiny": ((32, 32, 3), ((224, 224, 3), 1000, 28_589_128)),
    # The CIFAR nets at their papers' counts (Zagoruyko and Komodakis 2016: 2.7M, 8.9M, 36.5M; Huang et
    # al. 2017: DenseNet-BC k=12 depth 100, 0.8M).
    "wrn16_4": ((32, 32, 3), ((32, 32, 3), 10, 2_748_890)),
    "wrn40_4": ((32, 32, 3), ((32, 32, 3), 10, 8_949_210)),
    "wrn28_10": ((32, 32, 3), ((32, 32, 3), 10, 36_479_194)),
    "densenet_bc_100_12": ((32, 32, 3), ((32, 32, 3), 10, 769_162)),
}
IMAGE_OUTPUTS = {"unet_small"}  # (N, H, W, num_classes): one prediction per pixel


def test_every_registered_model_is_checked():
    assert sorted(ZOO) == models.available()


class _FirstDropoutKey(nn.Module):
    """Returns the key a Linen module's first `make_rng("dropout")` draws: the one `LinenModel`
    reseeds its NNX model's Dropout streams with (`nnx_layers.reseed_dropout`)."""

    def __call__(self):
        return self.make_rng("dropout")


def linen_dropout_key(rngs_key: jax.Array) -> jax.Array:
    return _FirstDropoutKey().apply({}, rngs={"dropout": rngs_key})


@dataclasses.dataclass
class Case:
    name: str
    linen: models.LinenModel
    variables: dict
    x: jax.Array
    abstract_nnx: nnx.Module  # create_nnx's, built abstractly once per case (densenet121's takes seconds)

    def nnx_model(self) -> nnx.Module:
        """A new NNX model from `create_nnx` holding `variables`."""
        return models.load_linen_variables(nnx.clone(self.abstract_nnx), self.variables)


SLOW = {"densenet121"}  # 20-60 s a test in a CI run: its 121 layers run op by op, in both APIs


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])
        for name in sorted(set(ZOO) - Z.SIZES_OF_CHECKED_CODE)
    ],
)
def case(request) -> Case:
    name, shape = request.param, (2, *ZOO[request.param][0])
    linen = models.create(name)
    abstract = nnx.eval_shape(lambda: models.create_nnx(name, input_shape=shape[1:], rngs=nnx.Rngs(0)))
    return Case(name, linen, Z.fake_variables(linen, shape), Z.random_images(shape, seed=1), abstract)


def assert_trees_equal(actual, expected) -> None:
    """Same paths, shapes and values, bit for bit (np.array_equal: assert_array_equal takes seconds on
    VGG's 100M weights)."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), e in zip(jax.tree.leaves_with_path(actual), jax.tree.leaves(expected), strict=True):
        assert np.shape(a) == np.shape(e) and np.array_equal(a, e), jax.tree_util.keystr(path)


def test_same_logits_in_eval_mode(case):
    model = case.nnx_model()
    model.eval()
    logits = model(case.x)
    per_pixel = case.x.shape[1:3] if case.name in IMAGE_OUTPUTS else ()
    assert logits.shape == (2, *per_pixel, 10) and logits.dtype == jnp.float32
    np.testing.assert_array_equal(case.linen.apply(case.variables, case.x), logits)


def test_same_logits_and_batch_statistics_in_train_mode(case):
    key = jax.random.PRNGKey(7)
    expected, updates = case.linen.apply(
        case.variables, case.x, train=True, rngs={"dropout": key}, mutable=["batch_stats"]
    )
    model = case.nnx_model()
    model.train()
    L.reseed_dropout(model, linen_dropout_key(key))
    np.testing.assert_array_equal(model(case.x), expected)
    moved = models.linen_variables(model)
    assert_trees_equal(moved.get("batch_stats", {}), updates.get("batch_stats", {}))
    assert_trees_equal(moved["params"], case.variables["params"])
    if "batch_stats" in case.variables:  # the statistics did move
        before, after = case.variables["batch_stats"], updates["batch_stats"]
        assert not any(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))


def test_weights_convert_both_ways(case):
    model = case.nnx_model()
    variables = models.linen_variables(model)
    assert set(variables) == set(case.variables)
    assert_trees_equal(variables, case.variables)  # Linen -> NNX -> Linen
    again = models.load_linen_variables(case.nnx_model(), variables)  # NNX -> Linen -> NNX
    assert_trees_equal(
        nnx.state(again, (nnx.Param, nnx.BatchStat)), nnx.state(model, (nnx.Param, nnx.BatchStat))
    )


@pytest.mark.parametrize("name", sorted(ZOO))
def test_parameter_counts_of_the_nnx_models(name):
    """The Linen forms' counts are checked by each family's tests (test_resnet, test_vgg, ...)."""
    input_shape, classes, expected = ZOO[name][1]
    create = lambda: models.create_nnx(name, num_classes=classes, input_shape=input_shape, rngs=nnx.Rngs(0))
    assert Z.count(nnx.state(nnx.eval_shape(create), nnx.Param)) == expected


@pytest.fixture(scope="module")
def compact():
    linen = models.create("compact")
    x = Z.random_images((2, 12, 12, 1))
    variables = Z.fake_variables(linen, x.shape)
    model = models.load_linen_variables(
        models.create_nnx("compact", input_shape=(12, 12, 1), rngs=nnx.Rngs(0)), variables
    )
    return linen, variables, model, x


def test_load_linen_variables_lists_every_misfit_and_loads_nothing(compact):
    linen, variables, model, x = compact
    weights = lambda: nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))
    before = jax.tree.map(np.asarray, weights())
    params = dict(variables["params"])
    params["fc"] = {"kernel": jnp.zeros((64, 7)), "bias": params["fc"]["bias"]}
    del params["conv1"]
    params["conv99"] = {"kernel": jnp.zeros((3, 3, 1, 24))}
    batch_stats = {**variables["batch_stats"], "bn1": {"mean": jnp.zeros(24)}}
    wrong = {"params": params, "batch_stats": batch_stats, "cache": {}}
    with pytest.raises(ValueError, match="variables do not fit CompactCNN: ") as error:
        models.load_linen_variables(model, wrong)
    message = str(error.value)
    for problem in [
        "params['fc']['kernel']: shape (64, 7), expected (64, 10)",
        "params['conv1']['kernel']: missing",
        "params['conv99']['kernel']: unexpected",
        "batch_stats['bn1']['var']: missing",
        "unexpected collection 'cache'",
    ]:
        assert problem in message
    assert_trees_equal(weights(), before)  # nothing was loaded


def test_linen_form_under_jit_and_eagerly_in_any_order(compact):
    """The Linen form builds its NNX model from a cached abstract one: neither a trace nor an eager call
    leaves arrays or tracers in the cache for the next call."""
    linen, variables, model, x = compact
    model.eval()
    expected = np.asarray(model(x))
    eager = linen.apply(variables, x)
    jitted = jax.jit(linen.apply)(variables, x)
    np.testing.assert_array_equal(eager, expected)
    np.testing.assert_array_equal(linen.apply(variables, x), expected)  # eager again, after the trace
    np.testing.assert_allclose(jitted, expected, rtol=1e-5, atol=1e-6)
    cached = nnx.state(linen.abstract_nnx_model(x.shape[1:]))
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(cached))
