"""The model zoo, written once in Flax NNX: `create_nnx(name, rngs=...)` builds an NNX model,
`create(name)` the same architecture as a Flax Linen module; `available()`, `@register(name)`,
and `load_torch_state_dict` / `save_torch_state_dict` for torchvision weights in and out."""

import importlib
import pkgutil

from jaxcnn.models._common import FeatureInfo, ZooModel, feature_info
from jaxcnn.models.allconv import AllConvNet
from jaxcnn.models.bridge import LinenModel, linen_variables, load_linen_variables
from jaxcnn.models.cifar_resnet import CifarResNet, ResNet20, ResNet56
from jaxcnn.models.compact import CompactCNN
from jaxcnn.models.convnext import ConvNeXt, ConvNeXtBlock
from jaxcnn.models.densenet import DenseBlock, DenseNet
from jaxcnn.models.efficientnet import EfficientNet, MBConv
from jaxcnn.models.fastcnn import FastCNN
from jaxcnn.models.finetune import replace_head, transfer_variables
from jaxcnn.models.lenet import LeNet5
from jaxcnn.models.mobilenet import InvertedResidual, MobileNetV2
from jaxcnn.models.registry import arguments, available, create, create_nnx, is_nnx, register
from jaxcnn.models.resnet import BasicBlock, Bottleneck, ResNet, ResNet18, ResNet34, ResNet50
from jaxcnn.models.simple_cnn import SimpleCNN
from jaxcnn.models.torch_weights import load_torch_state_dict, save_torch_state_dict
from jaxcnn.models.unet import UNetSmall
from jaxcnn.models.vgg import VGG, VGG11, VGG11BN, VGG16, VGG16BN
from jaxcnn.models.wide_resnet import WideBasicBlock, WideResNet

# Every module of the package is imported, so each model registers itself without a list to keep.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "VGG",
    "VGG11",
    "VGG11BN",
    "VGG16",
    "VGG16BN",
    "AllConvNet",
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "CompactCNN",
    "ConvNeXt",
    "ConvNeXtBlock",
    "DenseBlock",
    "DenseNet",
    "EfficientNet",
    "FastCNN",
    "FeatureInfo",
    "InvertedResidual",
    "LeNet5",
    "LinenModel",
    "MBConv",
    "MobileNetV2",
    "ResNet",
    "ResNet18",
    "ResNet20",
    "ResNet34",
    "ResNet50",
    "ResNet56",
    "SimpleCNN",
    "UNetSmall",
    "WideBasicBlock",
    "WideResNet",
    "ZooModel",
    "arguments",
    "available",
    "create",
    "create_nnx",
    "feature_info",
    "replace_head",
    "transfer_variables",
    "is_nnx",
    "linen_variables",
    "load_linen_variables",
    "load_torch_state_dict",
    "register",
    "save_torch_state_dict",
]
