"""Draws a trained run from its newest checkpoint: first-layer filters, feature maps of one test
image, the test confusion matrix and misclassified test examples, as PNG files.

    python experiments/visualize.py --workdir runs/lenet5 [--out runs/lenet5/plots] [--image 0]

The model, dataset and optimizer are rebuilt from the run's `config.json` (written by
`experiments/train.py`), so the checkpoint restores into the same structure it was saved from.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from jaxcnn import data, parallel, training, visualize


def load_config(workdir: Path):
    """The run's config: `default_config()` updated with `workdir/config.json`."""
    recorded = workdir / "config.json"
    if not recorded.exists():
        raise FileNotFoundError(
            f"{recorded} not found: is {workdir} the --workdir of an experiments/train.py run?"
        )
    config = training.default_config()
    with config.unlocked():
        config.update(json.loads(recorded.read_text()))
    return config


def restore(workdir: Path, config, test_data: data.ArrayDataset):
    """`(model, variables, step)` from the newest readable checkpoint of the run in `workdir`.

    The template mirrors what `train_and_evaluate` saves (DP-SGD optimizer state, ensemble member
    axis, metric sums); of an ensemble, member 0 (seed `config.seed`) is drawn.
    """
    model = training.create_model(config, test_data.num_classes)
    # Only the template's structure matters, and the schedule's length does not change it: any length
    # the schedule accepts will do.
    total_steps = max(config.num_steps, config.warmup_steps + 1)
    template, metrics, _, _ = training.initial_state(config, model, test_data.image_shape, total_steps)
    checkpoints = training.Checkpoints(workdir / "checkpoints", read_only=True)  # the run may be saving now
    try:
        restored = checkpoints.restore_latest(template, metrics)
    finally:
        checkpoints.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: has the run saved one yet?")
    state = parallel.ensemble_member(restored[0], 0) if config.ensemble_size > 1 else restored[0]
    return model, state.for_eval().variables(), int(state.step)


def draw(workdir: Path, out: Path, image_index: int = 0) -> list[Path]:
    """Writes the four pictures of the run in `workdir` into `out`; returns their paths."""
    config = load_config(workdir)
    test_data = data.load(
        config.dataset,
        "test",
        num_examples=config.test_examples,
        data_dir=config.data_dir or None,
        source=config.data_source,
    )
    if not 0 <= image_index < len(test_data):
        raise ValueError(f"--image must be in [0, {len(test_data)}), got {image_index}")
    model, variables, step = restore(workdir, config, test_data)
    image = next(data.batches(test_data.take(image_index + 1), image_index + 1, shuffle=False))["image"][-1:]
    path, kernel, maps = visualize.first_conv(model, variables, image)
    predictions = visualize.predict(model, variables, test_data)
    label = test_data.class_names[test_data.labels[image_index]]
    where = f"{config.model} on {config.dataset}, step {step}"
    figures = {
        "filters.png": visualize.plot_filters(kernel, title=f"First-layer filters ({path}) of {where}"),
        "feature_maps.png": visualize.plot_feature_maps(
            maps[0],
            image=test_data.images[image_index],
            title=f"{path} feature maps of test image {image_index} ({label})",
        ),
        "confusion_matrix.png": visualize.plot_confusion_matrix(
            visualize.confusion_matrix(test_data.labels, predictions, test_data.num_classes),
            test_data.class_names,
        ),
        "misclassified.png": visualize.plot_misclassified(
            test_data.images, test_data.labels, predictions, test_data.class_names
        ),
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, figure in figures.items():
        figure.savefig(out / name, dpi=100)
        paths.append(out / name)
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path, help="the --workdir of a train.py run")
    parser.add_argument("--out", type=Path, help="where the PNG files go (default: WORKDIR/plots)")
    parser.add_argument("--image", type=int, default=0, help="index of the test image for the feature maps")
    args = parser.parse_args(argv)
    try:
        paths = draw(args.workdir, args.out or args.workdir / "plots", args.image)
    except (FileNotFoundError, ValueError, training.CheckpointError, data.DataUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(["Pictures written:", *(f"  {path}" for path in paths)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
