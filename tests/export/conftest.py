"""Zoo models with random weights for the export tests, built once per model and shape."""

from __future__ import annotations

import functools
import gc
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxcnn import models

# Each zoo model at its smallest input (or a small one): the export does not depend on the size.
# The slow ones hold tens of millions of weights or a hundred layers. vgg16 and vgg16_bn are vgg11's code
# with more layers and 138M weights, whose export alone takes gigabytes (tests/models checks their shapes);
# the models of tests/models/zoo_checks.SIZES_OF_CHECKED_CODE run the code of others here at other depths.
ZOO = {
    "allconv": (16, 16, 3), "compact": (8, 8, 1), "convnext_tiny": (32, 32, 3), "densenet121": (32, 32, 3),
    "efficientnet_b0": (8, 8, 3), "fastcnn": (16, 16, 3), "lenet5": (16, 16, 1), "mobilenet_v2": (8, 8, 3),
    "resnet18": (8, 8, 3), "resnet20": (8, 8, 3), "resnet34": (8, 8, 3), "resnet50": (8, 8, 3),
    "resnet56": (8, 8, 3), "resnext50_32x4d": (8, 8, 3), "simple_cnn": (8, 8, 1), "unet_small": (8, 8, 1),
    "vgg11": (32, 32, 3), "vgg11_bn": (32, 32, 3), "wrn16_4": (8, 8, 3),
}  # fmt: skip
# VGG's code with narrow convolutions: its 25088 x 4096 classifier layer (133M weights) took 8 GB to export,
# and two such tests at once, one per core, ran the 24 GB test machine out of memory.
MODEL_KWARGS = {name: {"config": (8, "M", 16, "M")} for name in ("vgg11", "vgg11_bn")}
FAST = {"compact", "fastcnn", "lenet5", "resnet20", "simple_cnn", "unet_small"}


def random_weights(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """`model` with numpy draws for weights: kernels of variance 1/fan_in, BatchNorm scales and variances in
    [0.5, 1.5), the rest N(0, 0.1^2), so that every layer (BatchNorm's statistics too) shapes the logits,
    and the weights are not those of any `impl`'s own initialisation."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):  # Dropout's streams (unused in eval)
            return jax.random.split(jax.random.key(seed), leaf.shape)
        if not jnp.issubdtype(leaf.dtype, jnp.floating):  # their counts
            return jnp.zeros(leaf.shape, leaf.dtype)
        name = next(key.key for key in reversed(path) if hasattr(key, "key"))  # the Variable's, before .value
        if name in ("scale", "var"):
            return jnp.asarray(rng.random(leaf.shape, np.float32) + np.float32(0.5), leaf.dtype)
        std = 1 / math.sqrt(math.prod(leaf.shape[:-1])) if name == "kernel" else 0.1
        return jnp.asarray(rng.standard_normal(leaf.shape, np.float32) * np.float32(std), leaf.dtype)

    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(draw, state))


@pytest.fixture(autouse=True)
def _free_compiled_models():
    """Each export compiles a model with its weights as constants: dropped after each test (with them, one
    process of the suite grew past 13 GB over these tests, and the test machine has 24 GB for two)."""
    yield
    jax.clear_caches()
    gc.collect()


@functools.lru_cache(maxsize=2)  # a model's StableHLO and ONNX tests run one after another; big ones stay few
def zoo_model(name: str, impl: str = "xla", num_classes: int = 10) -> nnx.Module:
    """The zoo model `name` at `ZOO[name]` with `random_weights`, in eval mode (built once: do not mutate)."""
    build = lambda: models.create_nnx(
        name,
        num_classes=num_classes,
        input_shape=ZOO[name],
        rngs=nnx.Rngs(0),
        impl=impl,
        **MODEL_KWARGS.get(name, {}),
    )
    model = random_weights(nnx.merge(*nnx.split(nnx.eval_shape(build))))
    model.eval()
    return model


def eval_logits(model: nnx.Module, x: jax.Array) -> jax.Array:
    """The model's logits from one compiled program (eagerly, densenet121 runs op by op: ~10 s of CPU)."""
    return jax.jit(lambda x: model(x))(x)


def train_digits(workdir, **overrides) -> dict:
    """A few steps of `compact` on digits in `workdir` (with a moving average of the weights, which the
    evaluation uses); returns its result.json."""
    from jaxcnn.training import default_config, train_and_evaluate

    config = default_config()
    config.update_from_flattened_dict(
        {"model": "compact", "dataset": "digits", "batch_size": 32, "num_steps": 6, "optimizer": "adam",
         "learning_rate": 1e-2, "log_every": 3, "checkpoint_every": 6, "train_examples": 256,
         "test_examples": 64, "ema.decay": 0.5, **overrides}
    )  # fmt: skip
    train_and_evaluate(config, workdir)
    return json.loads((workdir / "result.json").read_text())
