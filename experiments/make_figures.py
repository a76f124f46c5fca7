"""Makes the README's pictures in docs/ from a short LeNet-5 run on Fashion-MNIST.

    python experiments/make_figures.py [--workdir DIR] [--out docs]

Trains the default run (`experiments/configs/lenet5.py`: eight epochs, about two minutes on 2 CPU cores) with
test metrics every quarter epoch, then draws its learning curves, first-layer filters, the feature maps
of one test image, the confusion matrix and misclassified examples into `--out`. Without Fashion-MNIST
(`jaxcnn.data.DataUnavailableError`) it trains the `compact` model on the 8x8 digits instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

# Run as a script, this directory is on sys.path: reuse the checkpoint-drawing of experiments/visualize.py.
from visualize import draw  # the sibling script, not jaxcnn.visualize

import jaxcnn
from jaxcnn import data, training, visualize

ROOT = Path(__file__).resolve().parents[1]
MAX_BYTES = 150_000  # README pictures stay small


def run_config():
    """The default run's config, with evaluation every quarter epoch for the curves."""
    spec = importlib.util.spec_from_file_location(
        "lenet5_config", ROOT / "experiments" / "configs" / "lenet5.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    try:
        data.load(config.dataset, "test", num_examples=1)
        config.eval.every, config.log_every = 117, 39  # 468 steps an epoch
    except data.DataUnavailableError as error:
        print(f"{str(error).splitlines()[0]}\n-> drawing a run of compact on digits instead", file=sys.stderr)
        config.model, config.dataset, config.batch_size = "compact", "digits", 32
        config.num_epochs, config.num_steps, config.eval.every, config.log_every = 0, 400, 50, 10
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="where the run goes (default: a temporary directory)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNG files go")
    args = parser.parse_args(argv)
    jaxcnn.configure_cpu()
    config = run_config()
    with tempfile.TemporaryDirectory(prefix="make_figures-") as scratch:
        workdir = args.workdir or Path(scratch)
        result = training.train_and_evaluate(config, workdir)
        print(result.describe())
        figure = visualize.plot_learning_curves(training.read_metrics(workdir / "metrics.jsonl"))
        args.out.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.out / "curves.png", dpi=90)
        paths = [args.out / "curves.png", *draw(workdir, args.out)]
    print("Pictures written:")
    for path in paths:
        size = path.stat().st_size
        print(f"  {path} ({size / 1000:.0f} KB)")
        if size > MAX_BYTES:
            print(f"error: {path} is over {MAX_BYTES / 1000:.0f} KB", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
