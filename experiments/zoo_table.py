"""A Markdown table of every registered model: input, parameters, FLOPs, minimum input size.

    python experiments/zoo_table.py            # prints it
    python experiments/zoo_table.py --write    # writes docs/zoo.md (the site's zoo guide shows it)

ImageNet models are measured at 224x224x3 with 1000 classes, the CIFAR nets at 32x32x3 and
the small ones at 28x28x1, both with 10 classes. Nothing is computed: shapes are traced.
"""

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

import jaxcnn
from jaxcnn import models

IMAGENET = {"resnet18", "resnet34", "resnet50", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "mobilenet_v2"}
IMAGENET |= {"resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2", "densenet121", "efficientnet_b0"}
IMAGENET |= {"convnext_tiny"}
CIFAR = {"resnet20", "resnet56", "allconv", "wrn16_4", "wrn28_10", "wrn40_4", "densenet_bc_100_12"}
IMAGE_TO_IMAGE = {"unet_small"}  # one output per pixel and class: shown with one (a denoiser's)


def setting(name: str) -> tuple[tuple[int, int, int], int]:
    """(input shape, classes) the table uses for a model."""
    if name in IMAGENET:
        return (224, 224, 3), 1000
    return ((32, 32, 3) if name in CIFAR else (28, 28, 1)), 1 if name in IMAGE_TO_IMAGE else 10


def minimum_size(model, channels: int) -> int:
    """The smallest square input the model takes: models reject smaller ones with a ValueError
    naming the minimum ("needs inputs of at least NxN"), so a 1x1 probe finds it."""
    probe = lambda size: jax.eval_shape(
        model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)
    )
    try:
        probe(1)
        return 1
    except ValueError as e:
        found = re.search(r"at least (\d+)x\1", str(e))
        if found is None:
            raise
    probe(int(found.group(1)))  # the minimum itself works
    return int(found.group(1))


def _flops(value: int) -> str:
    return f"{value / 1e9:.2f} G" if value >= 1e8 else f"{value / 1e6:.2f} M"


ROOT = Path(__file__).resolve().parents[1]


def row(name: str) -> str:
    """The table's line for one registered model."""
    shape, classes = setting(name)
    model = models.create(name, num_classes=classes)
    result = jaxcnn.summary(model, shape)
    size = minimum_size(model, shape[-1])
    dims = "x".join(map(str, shape))
    per_pixel = " per pixel" if len(result.output_shape) > 1 else ""  # an image out, (H, W, classes)
    return (
        f"| `{name}` | {dims} | {classes}{per_pixel} | {result.total_params:,} "
        f"| {_flops(result.total_flops)} | {size}x{size} |"
    )


def table() -> str:
    lines = [
        "| model | input | classes | parameters | FLOPs | minimum input |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    lines += [row(name) for name in models.available()]
    lines += [
        "",
        "FLOPs: 2 per multiply-accumulate of the convolutions and dense layers, per image "
        "(torchvision's tables count multiply-accumulates, half these numbers). "
        "Minimum input: the smallest square image the model accepts; "
        "smaller ones raise a ValueError naming it.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    text = table()
    if "--write" not in sys.argv[1:]:
        print(text, end="")
        return
    (ROOT / "docs" / "zoo.md").write_text(text)
    print("wrote docs/zoo.md")


if __name__ == "__main__":
    main()
