"""Backbones: every zoo model's feature maps (timm's `features_only` / `out_indices`) with channels and
strides known without compute, in both APIs, and `replace_head` for every family."""

import jax.numpy as jnp
import numpy as np
import pytest
import zoo_checks as Z
from flax import nnx

from jaxcnn import models


def abstract(name, **kwargs):
    return nnx.eval_shape(lambda: models.create_nnx(name, rngs=nnx.Rngs(0), **kwargs))


# (channels, stride) of each feature map at the model's own input size: the last map at each resolution
# (ResNets: the stem after its ReLU, then each stage, as timm's; ConvNeXt: each stage).
EXPECTED = {
    "resnet50": [(64, 2), (256, 4), (512, 8), (1024, 16), (2048, 32)],
    "densenet121": [(64, 2), (256, 4), (512, 8), (1024, 16), (1024, 32)],
    "efficientnet_b0": [(16, 2), (24, 4), (40, 8), (112, 16), (1280, 32)],
    "convnext_tiny": [(96, 4), (192, 8), (384, 16), (768, 32)],
    "mobilenet_v2": [(16, 2), (24, 4), (32, 8), (96, 16), (1280, 32)],
    "wrn16_4": [(64, 1), (128, 2), (256, 4)],
    "densenet_bc_100_12": [(216, 1), (300, 2), (342, 4)],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_feature_info_without_compute(name):
    info = models.feature_info(abstract(name))
    assert [(f.channels, f.stride) for f in info] == EXPECTED[name]
    size = abstract(name).input_shape[0]
    assert [f.shape[:2] for f in info] == [(-(-size // f.stride),) * 2 for f in info]


IMAGE_TO_IMAGE = {"unet_small"}  # its output is an image (per-pixel classes): no head to replace
DEEPER_COPIES = {"resnet152"}  # resnet101's code with more blocks: checked there, for the suite's time


@pytest.mark.parametrize("name", sorted(set(models.available()) - IMAGE_TO_IMAGE - DEEPER_COPIES))
def test_every_model_has_feature_maps_and_a_replaceable_head(name):
    model = abstract(name)
    info = models.feature_info(model)
    assert info and all(f.stride >= 1 and f.channels >= 1 for f in info)
    head = nnx.eval_shape(
        lambda: models.replace_head(models.create_nnx(name, rngs=nnx.Rngs(0)), 3, rngs=nnx.Rngs(1))
    )
    assert getattr(head, head.head_name).kernel.shape[-1] == 3


@pytest.fixture(scope="module")
def resnet18():
    linen = models.create("resnet18", features_only=True, out_indices=(1, -1))
    x = Z.random_images((1, 32, 32, 3))
    return linen, Z.fake_variables(models.create("resnet18"), x.shape), x


def test_features_only_in_both_apis(resnet18):
    linen, variables, x = resnet18
    maps = linen.apply(variables, x)
    assert [m.shape for m in maps] == [(1, 8, 8, 64), (1, 1, 1, 512)]
    model = models.load_linen_variables(
        models.create_nnx("resnet18", input_shape=(32, 32, 3), features_only=True, out_indices=(1, 4),
                          rngs=nnx.Rngs(0)),
        variables,
    )  # fmt: skip
    model.eval()
    for got, expected in zip(model(x), maps, strict=True):
        np.testing.assert_array_equal(got, expected)
    full = models.load_linen_variables(
        models.create_nnx("resnet18", input_shape=(32, 32, 3), rngs=nnx.Rngs(0)), variables
    )
    full.eval()
    all_maps = full.feature_maps(x)
    np.testing.assert_array_equal(all_maps[-1], maps[-1])
    np.testing.assert_array_equal(
        full.forward_head(all_maps[-1]), models.create("resnet18").apply(variables, x)
    )
    assert [(f.channels, f.shape) for f in models.feature_info(full)] == [
        (m.shape[-1], m.shape[1:]) for m in all_maps
    ]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"features_only": True, "out_indices": (5,)}, ValueError, r"0 to 4\), got \(5,\)"),
        ({"features_only": True, "out_indices": ()}, ValueError, "out_indices must hold indices"),
        ({"features_only": True, "out_indices": 1}, TypeError, "out_indices must be a sequence"),
        ({"out_indices": (1,)}, ValueError, "needs features_only=True"),
    ],
)
def test_bad_out_indices_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        abstract("resnet18", **kwargs)


def test_feature_info_refuses_other_modules():
    with pytest.raises(TypeError, match="zoo model"):
        models.feature_info(jnp.zeros(3))
