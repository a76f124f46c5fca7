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

import jaxcnn
from jaxcnn import data, models, training, visualize


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
    """`(model, variables, step)` from the newest readable checkpoint of the run in `workdir`: an NNX model
    holding the weights evaluation uses (variables None), or a Linen model and its variables.

    The template mirrors what `build_run` saves (DP-SGD optimizer state, ensemble member axis, metric
    sums); of an ensemble, member 0 (seed `config.seed`) is drawn.
    """
    # Only the template's structure matters, which the schedule's length does not change.
    template, metrics, _, _ = training.initial_state(
        config, test_data.num_classes, test_data.image_shape, total_steps=10**9
    )
    checkpoints = training.Checkpoints(workdir / "checkpoints", read_only=True)  # the run may be saving now
    try:
        restored = checkpoints.restore_latest(template, metrics)
    finally:
        checkpoints.close()
    if restored is None:
        raise FileNotFoundError(f"no checkpoint in {workdir / 'checkpoints'}: has the run saved one yet?")
    ensemble = training.EnsembleSettings.from_config(config.ensemble, "ensemble").size > 1
    state = training.ensemble_member(restored[0], 0) if ensemble else restored[0]
    compute = training.ComputeSettings.from_config(config.compute, "compute")
    model = training.create_model(
        config.model, test_data.num_classes, test_data.image_shape, config.seed,
        compute=compute, model_kwargs=config.model_kwargs,
    )  # fmt: skip
    variables = state.for_eval().variables()
    if models.is_nnx(config.model):
        return models.load_linen_variables(model, variables), None, int(state.step)
    return model, variables, int(state.step)


def draw(workdir: Path, out: Path, image_index: int = 0) -> list[Path]:
    """Writes the four pictures of the run in `workdir` into `out`; returns their paths."""
    config = load_config(workdir)
    source = data.DataSettings.from_config(config.data, "data")
    test_data = data.load(
        config.dataset,
        "test",
        num_examples=config.test_examples,
        data_dir=source.dir or None,
        source=source.source,
    )
    if not 0 <= image_index < len(test_data):
        raise ValueError(f"--image must be in [0, {len(test_data)}), got {image_index}")
    model, variables, step = restore(workdir, config, test_data)
    image = next(data.batches(test_data.take(image_index + 1), image_index + 1, shuffle=False))["image"][-1:]
    path, kernel, maps = visualize.first_conv(model, image, variables=variables)
    predictions = visualize.predict(model, test_data, variables=variables)
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
    jaxcnn.configure_cpu()
    try:
        paths = draw(args.workdir, args.out or args.workdir / "plots", args.image)
    except (FileNotFoundError, ValueError, training.CheckpointError, data.DataUnavailableError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(["Pictures written:", *(f"  {path}" for path in paths)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
