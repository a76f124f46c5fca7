"""jaxcnn weights out to PyTorch (`models.save_torch_state_dict`): torchvision's keys and shapes, the exact
inverse of `load_torch_state_dict`, and a jaxcnn ResNet-18's logits from PyTorch's ResNet-18."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_weights
from flax import nnx

from jaxcnn import models

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # the plain-torch torchvision copies
import torch_reference as ref  # noqa: E402

# A net of each family (resnet34/101/152, vgg16: the same code with other depths).
FAMILIES = ("resnet18", "resnet50", "resnext50_32x4d", "vgg11", "vgg11_bn", "mobilenet_v2", "densenet121",
            "efficientnet_b0", "convnext_tiny")  # fmt: skip


FAST = {"resnet18", "mobilenet_v2", "vgg11_bn"}  # the others take 10-30 s each here


def nets(names):
    return [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in names]


def zeros_like_variables(name: str) -> dict:
    shapes = jax.eval_shape(models.create(name).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)


@pytest.mark.parametrize("name", nets(FAMILIES))
def test_keys_and_shapes_are_torchvisions(name):
    with torch.device("meta"):  # shapes only
        expected = ref.BUILDERS[name](num_classes=10).state_dict()
    state_dict = models.save_torch_state_dict(name, zeros_like_variables(name))
    assert {k: tuple(v.shape) for k, v in state_dict.items()} == {
        k: tuple(v.shape) for k, v in expected.items()
    }
    assert {k for k, v in state_dict.items() if v.dtype == np.int64} == {
        k for k, v in expected.items() if v.dtype == torch.int64
    }


# VGG's 133M weights, held by torch, numpy and JAX at once beside another test worker, ran the 24 GB test
# machine out of memory; its keys and shapes are checked above, its loading in tests/models.
@pytest.mark.parametrize("name", nets(["resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny"]))
def test_a_round_trip_through_jaxcnn_is_exact(name):
    torch.manual_seed(0)
    net = ref.BUILDERS[name](num_classes=10)
    ref.randomize_batch_norm(net, torch.Generator().manual_seed(0))
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    back = models.save_torch_state_dict(name, models.load_torch_state_dict(name, state))
    assert back.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)


@pytest.mark.slow  # ~30 s here
def test_a_jaxcnn_resnet18_gives_its_logits_in_pytorchs_resnet18(tmp_path):
    model = random_weights(
        models.create_nnx("resnet18", num_classes=10, input_shape=(32, 32, 3), rngs=nnx.Rngs(0), impl="xla")
    )
    model.eval()
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(jax.jit(lambda x: model(x))(x))
    from safetensors.torch import load_file

    models.save_torch_state_dict("resnet18", model, tmp_path / "resnet18.safetensors")
    net = ref.resnet18(num_classes=10).eval()
    net.load_state_dict(load_file(tmp_path / "resnet18.safetensors"), strict=True)
    with torch.no_grad():
        logits = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_what_does_not_fit_is_listed():
    variables = zeros_like_variables("resnet18")
    del variables["params"]["fc"]["bias"]
    variables["params"]["conv1"]["kernel"] = np.zeros((3, 3, 3, 64), np.float32)
    with pytest.raises(
        ValueError,
        match=r"conv1/kernel: shape \(3, 3, 3, 64\), expected \(7, 7, 3, 64\); params/fc/bias: missing",
    ):
        models.save_torch_state_dict("resnet18", variables)
    with pytest.raises(ValueError, match="no torchvision counterpart"):
        models.save_torch_state_dict("lenet5", {"params": {}})
