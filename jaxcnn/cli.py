"""The `jaxcnn` command (also `python -m jaxcnn`): the only command-line parsing in the library.

python -m jaxcnn models
python -m jaxcnn summary resnet18 --input-shape 224,224,3 --num-classes 1000
python -m jaxcnn summary mobilenet_v2 --input-shape 160,160,3 --arg width_multiplier=0.5
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Sequence


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected positive ints like 224,224,3 (no batch dim), got {text!r}"
        )
    return shape


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. width_multiplier=0.5, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a bare string, e.g. shortcut=B


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxcnn", description="jaxcnn: convolutional networks in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("models", help="list the registered model names")
    summary = commands.add_parser(
        "summary",
        help="per-layer table of a model: shapes, parameters, FLOPs and their formulas",
        description="Prints a registered model's layers with output shapes, parameters and FLOPs.",
    )
    summary.add_argument("model", help="a registered name (see `jaxcnn models`)")
    summary.add_argument(
        "--input-shape", type=_shape, required=True, help="one example's shape, e.g. 28,28,1 or 224,224,3"
    )
    summary.add_argument("--num-classes", type=int, default=10, help="output classes (default 10)")
    summary.add_argument(
        "--arg",
        type=_model_arg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a model argument, e.g. --arg width_multiplier=0.5 (repeatable)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(argv)
    from jaxcnn import models  # imported here so that `--help` answers at once
    from jaxcnn.runtime import configure_cpu
    from jaxcnn.summary import summary

    configure_cpu()

    if args.command == "models":
        print("\n".join(models.available()))
        return 0
    try:
        model = models.create(args.model, num_classes=args.num_classes, **dict(args.arg))
        print(summary(model, args.input_shape))
    except (ValueError, TypeError) as e:
        print(f"jaxcnn summary: error: {e}", file=sys.stderr)
        return 2
    return 0
