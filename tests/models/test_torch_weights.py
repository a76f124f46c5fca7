"""torchvision state dicts -> jaxcnn variables: equal logits, validation, no torch at import.

The references are plain-torch copies of torchvision's architectures (torch_reference.py),
randomly initialised (BatchNorm statistics too) and run in eval mode.
"""

import functools
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")

import torch_reference as ref  # noqa: E402  (needs torch)
import zoo_checks as Z  # noqa: E402

from jaxcnn import models  # noqa: E402

TOLERANCE = 1e-4  # max |jaxcnn - torch| relative to max |torch| over the logits


@pytest.fixture(scope="module", autouse=True)
def _free_the_converted_models():
    yield
    converted.cache_clear()  # the VGGs hold gigabytes


@pytest.fixture(scope="module")
def resnet18_state():
    return {k: v.numpy() for k, v in converted("resnet18")[0].state_dict().items()}


@functools.cache
def converted(name: str, **kwargs) -> tuple[torch.nn.Module, dict]:
    """A randomly initialised torchvision-style model (BatchNorm statistics too), in eval mode,
    and its state dict converted to jaxcnn variables."""
    torch.manual_seed(0)
    net = ref.BUILDERS[name](**kwargs).eval()
    ref.randomize_batch_norm(net, torch.Generator().manual_seed(0))
    create_kwargs = {"width_multiplier": kwargs["width_mult"]} if "width_mult" in kwargs else {}
    return net, models.load_torch_state_dict(name, net.state_dict(), **create_kwargs)


def relative_error(api: str, name: str, size: int, **kwargs) -> float:
    """Of the converted weights in the Linen form (`create`, `apply`) or loaded into the NNX model
    (`create_nnx`, `load_linen_variables`), both jitted."""
    net, variables = converted(name, **kwargs)
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    create_kwargs = {"width_multiplier": kwargs["width_mult"]} if "width_mult" in kwargs else {}
    images = jnp.asarray(x.transpose(0, 2, 3, 1))
    if api == "linen":
        model = models.create(name, num_classes=expected.shape[1], **create_kwargs)
        got = jax.jit(model.apply)(variables, images)
    else:
        create = lambda: models.create_nnx(
            name,
            num_classes=expected.shape[1],
            input_shape=images.shape[1:],
            rngs=nnx.Rngs(0),
            **create_kwargs,
        )
        model = models.load_linen_variables(nnx.eval_shape(create), variables)
        model.eval()
        graphdef, weights, rest = nnx.split(model, (nnx.Param, nnx.BatchStat), ...)
        got = jax.jit(lambda weights, x: nnx.merge(graphdef, weights, rest)(x))(weights, images)
    return float(np.abs(np.asarray(got) - expected).max() / np.abs(expected).max())


API = pytest.mark.parametrize("api", ["linen", "nnx"])


SIZES = {
    "resnet18": 64,
    "resnet50": 64,
    "mobilenet_v2": 64,
    # 64x64 leaves a 2x2 map for the adaptive pool, so the 7x7 input of the first Linear varies
    # over space and its (C, H, W) -> (H, W, C) row order is checked.
    "vgg11": 64,
    "vgg11_bn": 64,
    # the new families at 32x32 (ConvNeXt's minimum; DenseNet's and EfficientNet's last maps are 1x1)
    "resnet101": 32,  # resnet152: the same code with more blocks (its count is checked in test_bridge)
    "resnext50_32x4d": 32,
    "wide_resnet50_2": 32,
    "densenet121": 32,
    "efficientnet_b0": 32,
    "convnext_tiny": 32,
}
# The NNX models on one net of most families (MobileNetV2 below; DenseNet's for time): test_bridge shows
# that both APIs give the same logits, bit for bit, for every model.
NNX_CHECKED = ("resnet50", "vgg11_bn", "efficientnet_b0", "convnext_tiny")


@pytest.mark.parametrize(
    "api, name", [("linen", name) for name in SIZES] + [("nnx", name) for name in NNX_CHECKED]
)
def test_logits_equal_torchvision(api, name):
    assert relative_error(api, name, SIZES[name]) < TOLERANCE


@API
def test_logits_equal_torchvision_with_width_multiplier_and_classes(api):
    assert relative_error(api, "mobilenet_v2", 33, width_mult=0.5, num_classes=7) < TOLERANCE


def test_vgg_flatten_order_matters():
    """Loading VGG's first Linear without the row permutation would give other logits."""
    net, variables = converted("vgg11")
    kernel = variables["params"]["fc1"]["kernel"]
    torch_kernel = net.state_dict()["classifier.0.weight"].numpy()
    np.testing.assert_array_equal(kernel[(2 * 7 + 3) * 512 + 5], torch_kernel[:, 5 * 49 + 2 * 7 + 3])
    assert not np.array_equal(kernel, torch_kernel.T)


# resnet152 is resnet101's code with more blocks (its count is checked in test_bridge).
@pytest.mark.parametrize("name", sorted(set(ref.BUILDERS) - {"resnet152"}))
def test_every_torchvision_parameter_has_a_place(name):
    """Every torchvision model of the zoo (resnet34 and vgg16 too) converts: names and shapes match
    one to one. The reference is built on torch's meta device (shapes only), the values are zeros."""
    with torch.device("meta"):
        net = ref.BUILDERS[name]()
    state = net.state_dict()
    variables = models.load_torch_state_dict(
        name, {k: np.broadcast_to(np.float32(0), v.shape) for k, v in state.items()}
    )
    params = sum(p.numel() for p in net.parameters())
    assert (
        Z.count(variables["params"])
        == params
        == Z.param_count(models.create(name, num_classes=1000), (1, 224, 224, 3))
    )
    statistics = sum(v.numel() for k, v in state.items() if k.endswith(("running_mean", "running_var")))
    assert Z.count(variables.get("batch_stats", {})) == statistics


def test_numpy_arrays_and_explicit_num_classes(resnet18_state):
    state = resnet18_state
    variables = models.load_torch_state_dict("resnet18", state, num_classes=1000)
    assert variables["params"]["fc"]["kernel"].shape == (512, 1000)
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 3, 64)  # OIHW -> HWIO
    np.testing.assert_array_equal(
        variables["batch_stats"]["layer1_0"]["bn1"]["var"], state["layer1.0.bn1.running_var"]
    )
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))


def test_missing_unexpected_and_mismatched_keys_are_all_listed(resnet18_state):
    state = dict(resnet18_state)
    del state["layer1.0.bn1.running_mean"], state["fc.bias"]
    state["layer9.0.conv1.weight"] = np.zeros((1,))
    state["layer2.0.conv2.weight"] = np.zeros((128, 128, 5, 5), np.float32)
    with pytest.raises(ValueError, match="state_dict does not fit 'resnet18'") as error:
        models.load_torch_state_dict("resnet18", state)
    message = str(error.value)
    assert "missing keys (2): " in message and "layer1.0.bn1.running_mean" in message and "fc.bias" in message
    assert "unexpected keys (1): layer9.0.conv1.weight" in message
    assert (
        "shape mismatches (1): layer2.0.conv2.weight: expected (128, 128, 3, 3), got (128, 128, 5, 5)"
        in message
    )


def test_wrong_class_count_is_a_shape_mismatch(resnet18_state):
    with pytest.raises(ValueError, match=r"fc.weight: expected \(10, 512\), got \(1000, 512\)"):
        models.load_torch_state_dict("resnet18", resnet18_state, num_classes=10)


def test_models_without_torchvision_counterpart_are_refused(resnet18_state):
    with pytest.raises(ValueError, match="'resnet20' \\(CifarResNet\\) has no torchvision counterpart"):
        models.load_torch_state_dict("resnet20", resnet18_state)
    with pytest.raises(ValueError, match="unknown model name"):
        models.load_torch_state_dict("resnet19", resnet18_state)


def test_safetensors_file_loads_as_the_state_dict(tmp_path, resnet18_state):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "resnet18.safetensors"
    safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in resnet18_state.items()}, path)
    from_file = models.load_torch_state_dict("resnet18", path)
    assert_trees_equal = functools.partial(jax.tree.map, np.testing.assert_array_equal)
    assert_trees_equal(from_file, models.load_torch_state_dict("resnet18", resnet18_state))
    without_bias = {k: np.ascontiguousarray(v) for k, v in resnet18_state.items() if k != "fc.bias"}
    safetensors_numpy.save_file(without_bias, path)
    with pytest.raises(ValueError, match=r"missing keys \(1\): fc.bias"):
        models.load_torch_state_dict("resnet18", str(path))


@pytest.mark.parametrize("keep", [0, 5, 40, -10])
def test_an_empty_or_truncated_safetensors_file_is_a_value_error_naming_it(tmp_path, keep):
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "resnet18.safetensors"
    safetensors_numpy.save_file(
        {"fc.weight": np.ones((10, 512), np.float32), "fc.bias": np.zeros(10, np.float32)}, path
    )
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    problem = {
        0: "it is empty (0 bytes)",
        5: "it is truncated: its 5 bytes end inside its header",  # inside the header's length
        40: "it is truncated: its 40 bytes end inside its header",  # inside the JSON header
        -10: f"it is truncated: {len(data) - 10:,} bytes of the {len(data):,} its header describes",
    }[keep]
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'{path} is not a readable .safetensors file: {problem}')}$"
    ):
        models.load_torch_state_dict("resnet18", path)


def test_importing_jaxcnn_does_not_import_torch():
    code = "import sys, jaxcnn, jaxcnn.models.torch_weights; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
