"""The `jaxcnn` command (also `python -m jaxcnn`): the only command-line parsing in the library.

python -m jaxcnn models
python -m jaxcnn summary resnet18 --input-shape 224,224,3 --num-classes 1000
python -m jaxcnn summary mobilenet_v2 --input-shape 160,160,3 --arg width_multiplier=0.5
python -m jaxcnn export runs/lenet5 --format stablehlo --out lenet5.stablehlo --raw-images
python -m jaxcnn export runs/lenet5 --format onnx --out lenet5.onnx   (after: bash setup.sh export)
python -m jaxcnn predict runs/lenet5 shoe.png photos/ --top 3
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
    _add_export(commands)
    _add_predict(commands)
    return parser


def _add_export(commands) -> None:
    export = commands.add_parser(
        "export",
        help="write a trained run's model as a StableHLO or ONNX artifact, with its metadata beside it",
        description="Exports the model of a run's workdir (its newest checkpoint's evaluation weights).",
    )
    export.add_argument("workdir", help="the run's workdir")
    export.add_argument(
        "--format", choices=("stablehlo", "onnx"), default="stablehlo", help="default stablehlo"
    )
    export.add_argument(
        "--out", required=True, help="the artifact's path; its metadata goes beside it as .json"
    )
    export.add_argument("--batch", type=int, default=None, help="a fixed batch size (default: any)")
    export.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="default float32")
    export.add_argument(
        "--raw-images",
        action="store_true",
        help="take uint8 pixels, normalized in the artifact as in training",
    )
    export.add_argument("--layout", choices=("NHWC", "NCHW"), default="NHWC", help="ONNX's input layout")


def _add_predict(commands) -> None:
    predict = commands.add_parser(
        "predict",
        help="classify image files with a run's model or an exported StableHLO artifact",
        description="Prints each image's most probable classes; unreadable files are reported and skipped.",
    )
    predict.add_argument("model", help="a run's workdir, or a StableHLO artifact (its .json beside it)")
    predict.add_argument("images", nargs="+", help="image files, or folders of them")
    predict.add_argument("--top", type=int, default=5, help="classes shown per image (default 5)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per batch (default 64)")
    predict.add_argument("--json", action="store_true", help="one JSON object per image instead of text")


def _export(args) -> int:
    from jaxcnn import export

    servable = export.from_workdir(args.workdir)
    options = {"batch": args.batch, "dtype": args.dtype, "raw_images": args.raw_images}
    if args.format == "onnx":
        export.export_onnx(servable, args.out, layout=args.layout, **options)
    else:
        export.export_stablehlo(servable, args.out, **options)
    print(f"wrote {args.out} and {export.metadata_path(args.out)}")
    return 0


def _predict(args) -> int:
    import json

    from jaxcnn.export.predict import Predictor

    predictor = Predictor.load(args.model)
    classified = 0
    for prediction in predictor.predict_files(args.images, top=args.top, batch_size=args.batch_size):
        if prediction.error:
            print(f"jaxcnn predict: skipped {prediction.path}: {prediction.error}", file=sys.stderr)
        elif args.json:
            top = [{"class": name, "probability": p} for name, p in prediction.top]
            print(json.dumps({"path": prediction.path, "top": top}))
        else:
            print(f"{prediction.path}: " + ", ".join(f"{name} {p:.1%}" for name, p in prediction.top))
        classified += not prediction.error
    return 0 if classified else 1


def _run_export_command(args) -> int:
    """`export` or `predict`: what goes wrong with the user's run, files or options is one line, status 2."""
    from jaxcnn.data import DataUnavailableError
    from jaxcnn.training import CheckpointError

    try:
        return (_export if args.command == "export" else _predict)(args)
    except (ValueError, TypeError, OSError, DataUnavailableError, CheckpointError) as e:
        print(f"jaxcnn {args.command}: error: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (default `sys.argv[1:]`); returns the exit status."""
    args = _parser().parse_args(argv)
    from jaxcnn import models  # imported here so that `--help` answers at once
    from jaxcnn.runtime import configure_cpu
    from jaxcnn.summary import summary

    configure_cpu()

    if args.command in ("export", "predict"):
        return _run_export_command(args)
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
