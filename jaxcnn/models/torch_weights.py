"""Weights from PyTorch: torchvision state dicts, in memory or in a `.safetensors` file, as jaxcnn variables.

    import torchvision
    state_dict = torchvision.models.resnet50(weights="IMAGENET1K_V2").state_dict()
    variables = jaxcnn.models.load_torch_state_dict("resnet50", state_dict)
    variables = jaxcnn.models.load_torch_state_dict("resnet50", "resnet50.safetensors")  # no torch needed
    model = jaxcnn.models.create("resnet50", num_classes=1000)
    logits = model.apply(variables, images_nhwc)  # images (N, H, W, 3), torchvision's normalisation
    nnx_model = jaxcnn.models.load_linen_variables(
        jaxcnn.models.create_nnx("resnet50", num_classes=1000, rngs=nnx.Rngs(0)), variables
    )  # the same weights in the NNX model

PyTorch is not imported here: the state dict's values may be torch tensors or numpy arrays. A
`.safetensors` file (what `safetensors.torch.save_file(model.state_dict(), path)` writes, and the format
model hubs serve) is read with the `safetensors` package's numpy reader (`pip install jaxcnn[safetensors]`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import nnx, traverse_util

from jaxcnn._files import write_atomically
from jaxcnn._registry import Registry
from jaxcnn.models.bridge import LinenModel, linen_variables
from jaxcnn.models.convnext import ConvNeXt
from jaxcnn.models.densenet import DenseNet
from jaxcnn.models.efficientnet import EfficientNet
from jaxcnn.models.mobilenet import MobileNetV2
from jaxcnn.models.registry import create
from jaxcnn.models.resnet import ResNet
from jaxcnn.models.unet import UNetSmall
from jaxcnn.models.vgg import POOLED_SIZE, VGG

Path = tuple[str, ...]
# A family's map from jaxcnn module paths (all of the model's) to torchvision module names.
# (a model of the family's class, its module paths) -> their torchvision names
Namer = Callable[[Any, list[Path]], dict[Path, str]]

# (collection, leaf name) -> torchvision's parameter or buffer name.
_LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
    ("params", "layer_scale"): "layer_scale",  # ConvNeXt's, held by the block itself
}


class TorchvisionFamily(NamedTuple):
    """How the zoo class `model` (and its subclasses) maps to its torchvision twin."""

    model: type
    namer: Namer
    classifier: str  # the last layer's weight: its rows are the classes
    first_conv: str  # the first convolution's weight: its columns are the input channels


# Families by the name of their class; `load_torch_state_dict` and `save_torch_state_dict` take their models.
TORCHVISION_FAMILIES: Registry[TorchvisionFamily] = Registry(
    "torchvision family", entry_type=TorchvisionFamily
)


def torchvision_family(
    model: type, *, classifier: str, first_conv: str, overwrite: bool = False
) -> Callable[[Namer], Namer]:
    """Registers the decorated namer as the map of `model`'s modules (and its subclasses') to torchvision's:

        @torchvision_family(MyNet, classifier="fc.weight", first_conv="conv1.weight")
        def my_net_names(model, paths):  # the built model, its module paths ("stage1", "conv") -> names
            return {path: ".".join(path) for path in paths}  # -> "stage1.conv"

    Raises:
      ValueError: a family of the same class name is registered, unless `overwrite=True` (see `Registry`).
    """

    def add(namer: Namer) -> Namer:
        entry = TorchvisionFamily(model, namer, classifier, first_conv)
        TORCHVISION_FAMILIES.register(model.__name__, entry, overwrite=overwrite)
        return namer

    return add


@torchvision_family(ResNet, classifier="fc.weight", first_conv="conv1.weight")
def _resnet_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # conv1, bn1, fc; layer2_0/conv1 -> layer2.0.conv1; downsample_conv/_bn -> downsample.0/.1
    parts = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
    rename = lambda part: parts.get(part, re.sub(r"^(layer\d+)_(\d+)$", r"\1.\2", part))
    return {path: ".".join(map(rename, path)) for path in paths}


@torchvision_family(VGG, classifier="classifier.6.weight", first_conv="features.0.weight")
def _vgg_names(model: VGG, paths: list[Path]) -> dict[Path, str]:
    # torchvision's `features` is one Sequential of conv, [bn,] relu and pool modules.
    names: dict[Path, str] = {("fc1",): "classifier.0", ("fc2",): "classifier.3", ("fc3",): "classifier.6"}
    index, convs = 0, 0
    for v in model.config:
        if v == "M":
            index += 1
            continue
        convs += 1
        names[(f"conv{convs}",)] = f"features.{index}"
        names[(f"bn{convs}",)] = f"features.{index + 1}"
        index += 3 if model.batch_norm else 2
    return names


@torchvision_family(MobileNetV2, classifier="classifier.1.weight", first_conv="features.0.0.weight")
def _mobilenet_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # features.0 = stem, features.i = block{i} (conv = Sequential of [expand,] depthwise, project
    # conv, project bn), features.{blocks + 1} = head; Conv2dNormActivation = (conv, bn).
    blocks = {path[0] for path in paths if path[0].startswith("block")}
    conv_bn = {"conv": "0", "bn": "1"}
    names: dict[Path, str] = {("classifier",): "classifier.1"}
    for path in paths:
        top, *inner = path
        if top in ("stem", "head"):
            names[path] = f"features.{0 if top == 'stem' else len(blocks) + 1}.{conv_bn[inner[0]]}"
        elif top in blocks:
            (part, layer), offset = inner, int((top, "expand", "conv") in paths)
            prefix = f"features.{top.removeprefix('block')}.conv"
            if part == "project":  # a plain Conv2d and BatchNorm2d in torchvision
                names[path] = f"{prefix}.{offset + 1 + int(layer == 'bn')}"
            else:
                names[path] = f"{prefix}.{offset if part == 'depthwise' else 0}.{conv_bn[layer]}"
    return names


@torchvision_family(UNetSmall, classifier="head.weight", first_conv="down1_conv1.weight")
def _unet_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # UNetSmall's attributes are the module names of its PyTorch twin (written in the tests).
    return {path: ".".join(path) for path in paths}


@torchvision_family(DenseNet, classifier="classifier.weight", first_conv="features.conv0.weight")
def _densenet_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # every module but the classifier sits in torchvision's `features`, nested as in jaxcnn
    return {path: ".".join(path if path[0] == "classifier" else ("features", *path)) for path in paths}


def _conv_bn(part: str) -> str:
    return {"conv": "0", "bn": "1"}.get(part, part)  # Conv2dNormActivation = (conv, bn); SE's fc1, fc2


@torchvision_family(EfficientNet, classifier="classifier.1.weight", first_conv="features.0.0.weight")
def _efficientnet_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # features.0 = stem, features.s.j = stage{s}_{j} (block = Sequential of [expand,] depthwise, se,
    # project), features.{stages + 1} = head, classifier = (dropout, linear).
    stages = max(int(match[1]) for p in paths if (match := re.match(r"stage(\d+)_", p[0])))
    names: dict[Path, str] = {("classifier",): "classifier.1"}
    for path in paths:
        top, *inner = path
        if top in ("stem", "head"):
            names[path] = f"features.{0 if top == 'stem' else stages + 1}.{_conv_bn(inner[0])}"
        elif (match := re.match(r"stage(\d+)_(\d+)", top)) and inner:
            parts = ["expand", "depthwise", "se", "project"]
            if getattr(model, top).expand is None:
                parts.remove("expand")
            stage, block = match.groups()
            names[path] = ".".join(
                [f"features.{stage}.{block}.block.{parts.index(inner[0])}", *map(_conv_bn, inner[1:])]
            )
    return names


@torchvision_family(ConvNeXt, classifier="classifier.2.weight", first_conv="features.0.0.weight")
def _convnext_names(model: nnx.Module, paths: list[Path]) -> dict[Path, str]:
    # features.0 = stem (conv, norm); features.{2s-1}.j = stage{s}_{j} (block = dwconv, permute, norm,
    # pwconv1, GELU, pwconv2, permute; layer_scale on the block); features.{2s} = downsample{s} (norm,
    # conv); classifier = (norm, flatten, linear).
    fixed = {"stem_conv": "features.0.0", "stem_norm": "features.0.1", "head_norm": "classifier.0",
             "classifier": "classifier.2"}  # fmt: skip
    parts = {"dwconv": "block.0", "norm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5"}
    names: dict[Path, str] = {}
    for path in paths:
        top, *inner = path
        if top in fixed:
            names[path] = fixed[top]
        elif match := re.match(r"stage(\d+)_(\d+)$", top):
            block = f"features.{2 * int(match[1]) - 1}.{match[2]}"
            names[path] = f"{block}.{parts[inner[0]]}" if inner else block
        elif match := re.match(r"downsample(\d+)_(norm|conv)$", top):
            names[path] = f"features.{2 * int(match[1])}.{0 if match[2] == 'norm' else 1}"
    return names


def _family(model_name: str, architecture: nnx.Module | nn.Module, caller: str) -> TorchvisionFamily:
    """The family of `architecture`'s class or of its nearest base; ValueError naming the registered ones."""
    by_class = {
        family.model: family for family in map(TORCHVISION_FAMILIES.get, TORCHVISION_FAMILIES.names())
    }
    family = next((by_class[cls] for cls in type(architecture).__mro__ if cls in by_class), None)
    if family is None:
        raise ValueError(
            f"model_name {model_name!r} ({type(architecture).__name__}) has no torchvision counterpart; "
            f"{caller} supports {', '.join(TORCHVISION_FAMILIES.names())} models"
        )
    return family


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "numpy"):  # a torch tensor, without importing torch
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a `.safetensors` file by name, read with numpy (no torch).

    Raises:
      ImportError: the `safetensors` package is missing (the message says how to install it).
      ValueError: the file is empty, truncated or damaged (the message names it and says which).
    """
    try:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file
    except ImportError:
        raise ImportError(
            "reading a .safetensors file needs the safetensors package: pip install 'jaxcnn[safetensors]'"
        ) from None
    try:
        return load_file(os.fspath(path))
    except SafetensorError as error:
        raise ValueError(
            f"{os.fspath(path)} is not a readable .safetensors file: {_damage(path, error)}"
        ) from None


def _damage(path: str | os.PathLike, error: Exception) -> str:
    """What is wrong with a `.safetensors` file its reader refused, from its layout: the header's length
    (8 bytes, little-endian), the JSON header (each tensor's `data_offsets` in the data), the data."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        length = f.read(8)
        header = f.read(int.from_bytes(length, "little")) if len(length) == 8 else b""
    if size == 0:
        return "it is empty (0 bytes)"
    if len(length) < 8 or len(header) < int.from_bytes(length, "little"):
        return f"it is truncated: its {size:,} bytes end inside its header"
    try:
        tensors = [v for k, v in json.loads(header).items() if k != "__metadata__"]
        end = 8 + len(header) + max((tensor["data_offsets"][1] for tensor in tensors), default=0)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        end = None  # a damaged header: the reader's own words say how
    if end is not None and size < end:
        return f"it is truncated: {size:,} bytes of the {end:,} its header describes"
    return str(error).removeprefix("Error while deserializing header: ")


def _torch_layout(array: np.ndarray, flatten_from: tuple[int, int, int] | None) -> np.ndarray:
    """torchvision's layout -> jaxcnn's: conv OIHW -> HWIO, Linear (out, in) -> (in, out), ConvNeXt's
    layer scale (C, 1, 1) -> (C,); a transposed conv's `(C_in, C_out // groups, kH, kW)` takes the same
    permutation to jaxcnn's `(kH, kW, C_out // groups, C_in)`, the kernel of the convolution it transposes.

    `flatten_from = (C, H, W)`: the Linear reads a flattened (C, H, W) map in PyTorch, which
    jaxcnn flattens as (H, W, C), so its input rows are permuted too."""
    if array.ndim == 3:
        return array.reshape(-1)
    if array.ndim == 4:
        return array.transpose(2, 3, 1, 0)
    if array.ndim == 2 and flatten_from is not None:
        return array.reshape(array.shape[0], *flatten_from).transpose(2, 3, 1, 0).reshape(-1, array.shape[0])
    return array.T if array.ndim == 2 else array


def _expected_torch_shape(shape: tuple[int, ...], leaf: str) -> tuple[int, ...]:
    if leaf == "layer_scale":
        return (*shape, 1, 1)
    if len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    return shape[::-1] if len(shape) == 2 else shape


def load_torch_state_dict(
    model_name: str, state_dict: Mapping[str, Any] | str | os.PathLike, **create_kwargs: Any
) -> dict[str, Any]:
    """Converts a torchvision state dict into variables for `create(model_name, **create_kwargs)`.

    Args:
      model_name: a registered ResNet (resnet18, resnet34, resnet50, resnet101, resnet152,
        resnext50_32x4d, wide_resnet50_2), VGG (vgg11, vgg16, and `_bn`), MobileNetV2 (mobilenet_v2),
        DenseNet (densenet121), EfficientNet (efficientnet_b0), ConvNeXt (convnext_tiny) or U-Net
        (unet_small: the names of its attributes) model, or one of a family added by `torchvision_family`.
      state_dict: torchvision's names (`layer1.0.conv1.weight`, `features.0.weight`, ...) to
        torch tensors or numpy arrays, or the path of a `.safetensors` file holding them.
        `num_batches_tracked` entries are ignored.
      **create_kwargs: as for `create` (e.g. `width_multiplier=0.5`); `num_classes` defaults
        to the rows of the state dict's last Linear weight.

    Returns:
      `{"params": ..., "batch_stats": ...}` (no `batch_stats` for VGG without BatchNorm), float32:
      conv weights OIHW -> HWIO, Linear weights (out, in) -> (in, out) (VGG's first Linear
      also has its input rows reordered from PyTorch's (C, 7, 7) flattening to jaxcnn's (7, 7, C)),
      BatchNorm weight/bias/running_mean/running_var -> scale/bias/mean/var.

    Raises:
      ValueError: a model without a torchvision counterpart, or a state dict with missing or
        unexpected keys or shapes that do not match (the message lists them all).
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = read_safetensors(state_dict)
    model = create(model_name, **create_kwargs)
    probe_shape = (32, 32, 3)  # any size the families accept: their weights do not depend on it
    architecture = model.abstract_nnx_model(probe_shape) if isinstance(model, LinenModel) else model
    family = _family(model_name, architecture, "load_torch_state_dict")
    if "num_classes" not in create_kwargs and family.classifier in state_dict:
        num_classes = int(np.shape(state_dict[family.classifier])[0])
        model = create(model_name, num_classes=num_classes, **create_kwargs)
    if family.first_conv in state_dict:  # U-Net's input channels are its first weights' (3 elsewhere)
        probe_shape = (*probe_shape[:2], int(np.shape(state_dict[family.first_conv])[1]))
    shapes = jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, *probe_shape), jnp.float32)
    )
    leaves = traverse_util.flatten_dict(shapes)  # (collection, *module path, leaf) -> shape
    names = family.namer(architecture, sorted({path[1:-1] for path in leaves}))

    variables, missing, mismatched, used = {}, [], [], set()
    for path, expected in leaves.items():
        torch_key = f"{names[path[1:-1]]}.{_LEAF_NAMES[path[0], path[-1]]}"
        if torch_key not in state_dict:
            missing.append(torch_key)
            continue
        used.add(torch_key)
        array = _to_numpy(state_dict[torch_key])
        torch_shape = _expected_torch_shape(expected.shape, path[-1])
        if array.shape != torch_shape:
            mismatched.append(f"{torch_key}: expected {torch_shape}, got {tuple(array.shape)}")
            continue
        flatten_from = None
        if isinstance(architecture, VGG) and path[1:-1] == ("fc1",):
            flatten_from = (expected.shape[0] // POOLED_SIZE**2, POOLED_SIZE, POOLED_SIZE)
        variables[path] = jnp.asarray(_torch_layout(array, flatten_from), expected.dtype)
    unexpected = sorted(k for k in state_dict if k not in used and not k.endswith("num_batches_tracked"))
    if missing or unexpected or mismatched:
        found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": mismatched}
        problems = [f"{label} ({len(items)}): {', '.join(items)}" for label, items in found.items() if items]
        raise ValueError(f"state_dict does not fit {model_name!r}: " + "; ".join(problems))
    return traverse_util.unflatten_dict(variables)


def _from_jaxcnn_layout(array: np.ndarray, leaf: str, flatten_to: bool) -> np.ndarray:
    """The inverse of `_torch_layout`: HWIO -> OIHW, (in, out) -> (out, in), layer scale (C,) -> (C, 1, 1);
    `flatten_to`: VGG's first Linear, whose input rows jaxcnn orders (7, 7, C) and PyTorch (C, 7, 7)."""
    if leaf == "layer_scale":
        return array.reshape(-1, 1, 1)
    if array.ndim == 4:
        return array.transpose(3, 2, 0, 1)
    if array.ndim == 2 and flatten_to:
        rows, out = array.shape
        return array.reshape(POOLED_SIZE, POOLED_SIZE, -1, out).transpose(3, 2, 0, 1).reshape(out, rows)
    return array.T if array.ndim == 2 else array


def _variable_shapes(model, channels: int) -> dict[tuple[str, ...], tuple[int, ...]]:
    """(collection, *module path, leaf) -> shape of the Linen `model`'s variables (nothing computed)."""
    probe = jax.ShapeDtypeStruct((1, 32, 32, channels), jnp.float32)  # any size the families accept
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), probe)
    return {path: leaf.shape for path, leaf in traverse_util.flatten_dict(shapes).items()}


def save_torch_state_dict(
    model_name: str,
    variables: Mapping[str, Any] | nnx.Module,
    path: str | os.PathLike | None = None,
    **create_kwargs: Any,
) -> dict[str, np.ndarray]:
    """The inverse of `load_torch_state_dict`: jaxcnn weights as torchvision's state dict, and with `path`
    written to that `.safetensors` file too (`pip install jaxcnn[safetensors]`), which PyTorch reads with
    `model.load_state_dict(safetensors.torch.load_file(path))`.

    Args:
      model_name: a registered model with a torchvision counterpart (see `load_torch_state_dict`).
      variables: `{"params": ..., "batch_stats": ...}` of `create(model_name, **create_kwargs)`, or the
        NNX model itself; `num_classes` and the input channels are read from them.

    Returns:
      torchvision's names to numpy arrays of exactly torchvision's shapes: OIHW convolutions, (out, in)
      Linear weights, BatchNorm's `weight`, `bias`, `running_mean`, `running_var` and a 0
      `num_batches_tracked` (int64).

    Raises:
      ValueError: a model without a torchvision counterpart, or variables that do not fit it (every
        missing, unexpected or misshapen one listed).
    """
    if isinstance(variables, nnx.Module):
        variables = linen_variables(variables)
    given = {key: np.asarray(leaf) for key, leaf in traverse_util.flatten_dict(dict(variables)).items()}
    model = create(model_name, **create_kwargs)
    architecture = model.abstract_nnx_model((32, 32, 3)) if isinstance(model, LinenModel) else model
    family = _family(model_name, architecture, "save_torch_state_dict")
    expected = _variable_shapes(model, 3)
    names = family.namer(architecture, sorted({key[1:-1] for key in expected}))
    torch_names = {key: f"{names[key[1:-1]]}.{_LEAF_NAMES[key[0], key[-1]]}" for key in expected}
    by_torch_name = {name: key for key, name in torch_names.items()}
    classifier, first_conv = by_torch_name[family.classifier], by_torch_name[family.first_conv]
    if "num_classes" not in create_kwargs and classifier in given:
        model = create(model_name, num_classes=given[classifier].shape[-1], **create_kwargs)
    expected = _variable_shapes(model, given[first_conv].shape[2] if first_conv in given else 3)
    problems = [f"{'/'.join(key)}: missing" for key in expected.keys() - given.keys()]
    problems += [f"{'/'.join(key)}: unexpected" for key in given.keys() - expected.keys()]
    problems += [
        f"{'/'.join(key)}: shape {given[key].shape}, expected {shape}"
        for key, shape in expected.items()
        if key in given and given[key].shape != shape
    ]
    if problems:
        raise ValueError(f"variables do not fit {model_name!r}: " + "; ".join(sorted(problems)))
    state_dict = {}
    for key, array in given.items():
        flatten_to = isinstance(architecture, VGG) and key[1:-1] == ("fc1",) and array.ndim == 2
        state_dict[torch_names[key]] = np.ascontiguousarray(_from_jaxcnn_layout(array, key[-1], flatten_to))
        if key[0] == "batch_stats" and key[-1] == "mean":
            state_dict[f"{names[key[1:-1]]}.num_batches_tracked"] = np.zeros((), np.int64)
    if path is not None:
        from safetensors.numpy import save  # imported here: an optional dependency (jaxcnn[safetensors])

        write_atomically(path, save(state_dict))
    return state_dict
