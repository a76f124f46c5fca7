"""`config.compute.impl`, the convolutions' lowering: every value it accepts builds and trains a model of
every zoo family (through `training.build_run`, a couple of steps), its max pools on pooling's own
vocabulary (`models._common.pool_impl`); anything else is refused where the config is read."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
from flax import nnx

from jaxcnn import functional
from jaxcnn import nnx_layers as L
from jaxcnn.training import build_run, create_model, default_config
from jaxcnn.training.model import ComputeSettings

# One model of each family of the zoo that classifies (unet_small maps images to images), made small for
# 28x28x1 images: every kind of layer the family has, little to compile.
FAMILIES = {
    "lenet5": {},
    "simple_cnn": {},
    "allconv": {"features": (4, 8)},
    "compact": {},
    "fastcnn": {"features": (4, 8, 8), "stem_features": 4},
    "resnet20": {"depth": 8, "widths": (4, 8, 8)},
    "wrn16_4": {"depth": 10, "width": 1},
    "resnet18": {"stage_sizes": (1, 1, 1, 1), "widths": (4, 8, 8, 8)},
    "densenet121": {"block_config": (1, 1), "growth_rate": 4, "num_init_features": 8, "bn_size": 2},
    "vgg11": {"config": (4, "M", 8, "M")},
    "mobilenet_v2": {"width_multiplier": 0.25, "inverted_residual_setting": ((1, 8, 1, 1), (6, 8, 2, 2))},
    "efficientnet_b0": {
        "setting": ((1, 3, 1, 8, 1), (6, 3, 2, 8, 1)),
        "stem_features": 8,
        "head_features": 16,
    },
    "convnext_tiny": {"widths": (8, 16), "depths": (1, 1)},
}
STEPS = 2


def _config(model: str, impl: str):
    config = default_config()
    config.update(
        model=model, dataset="synthetic", batch_size=8, num_steps=STEPS, train_examples=16,
        test_examples=8,
    )  # fmt: skip
    config.model_kwargs = FAMILIES[model]
    config.compute.impl = impl
    return config


@pytest.mark.slow
@pytest.mark.parametrize("impl", functional.CONV_IMPLS)
@pytest.mark.parametrize("model", FAMILIES)
def test_every_impl_trains_every_family(tmp_path, model, impl):
    run = build_run(_config(model, impl), tmp_path, handle_signals=False)
    try:
        before = jax.device_get(run.state.params)
        for _ in range(STEPS):
            run.state, run.metric_sums = run.spec.train_fn(run.state, run.metric_sums, next(run.batches))
        sums = jax.device_get(run.metric_sums)
        after = jax.device_get(run.state.params)
    finally:
        run.close()
    assert sums["count"] == STEPS * 8 and np.isfinite(sums["loss"])
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before))]
    assert all(np.isfinite(a).all() for a in jax.tree.leaves(after)) and any(changed)


@pytest.mark.parametrize("impl", functional.CONV_IMPLS)
def test_impl_reaches_every_convolution_and_max_pool(impl):
    """The convolutions take the value itself, the max pools "xla" for "xla" and "auto" for the rest."""
    compute = ComputeSettings(impl=impl)
    for model, kwargs in {**FAMILIES, "unet_small": {"width": 4}}.items():
        build = functools.partial(
            create_model, model, 10, (28, 28, 1), 0, compute=compute, model_kwargs=kwargs
        )
        net = nnx.eval_shape(build)  # the layers without their values: nothing computed
        layers = [layer for _, layer in nnx.iter_graph(net)]
        convs = [layer.impl for layer in layers if isinstance(layer, L.Conv)]
        pools = [layer.impl for layer in layers if isinstance(layer, L.MaxPool)]
        assert convs and set(convs) == {impl}, model
        assert set(pools) <= {"xla" if impl == "xla" else "auto"}, model


@pytest.mark.parametrize("impl", ["reshape", "fast", "XLA", ""])
def test_other_values_are_refused_naming_the_key(tmp_path, impl):
    with pytest.raises(ValueError, match=r"config\.compute\.impl must be one of 'auto', 'onednn', 'xla'"):
        build_run(_config("lenet5", impl), tmp_path, handle_signals=False)
