"""Transfer learning on Fashion-MNIST, measured: train on classes 0-4, then learn classes 5-9 from 1% of
their training labels (60 images a class) three ways, side by side:

- head only: the pretrained network, frozen, with a new classifier (`finetune.freeze = "backbone"`),
  trained with a 10x larger learning rate (1e-2; 1e-3 for the others);
- whole network: the pretrained network and a new classifier, all trained;
- from scratch: the same network from its random initialisation.

    python experiments/transfer.py --workdir runs/transfer [--model compact] [--pretrain-epochs 4]

Prints the table (test accuracy on the 5,000 test images of classes 5-9, training time) and writes it to
`WORKDIR/transfer.md` and `WORKDIR/transfer.json`. Each run is an ordinary run (`train_and_evaluate`) in
`WORKDIR/<name>`; a finished one is reported again, not retrained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

import jaxcnn
from jaxcnn import data
from jaxcnn.training import default_config, train_and_evaluate

BASE = "fashion_mnist"
SOURCE_CLASSES, TARGET_CLASSES = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


def class_subset(name: str, classes, label_fraction: float = 1.0, seed: int = 0):
    """A loader of `BASE` restricted to `classes` (relabelled 0..k-1); the training split keeps
    `label_fraction` of each class's images (a seeded draw), the test split all of them."""

    def load(split: str, *, data_dir=None, source: str = "auto") -> data.ArrayDataset:
        full = data.load(BASE, split, data_dir=data_dir, source=source)
        keep = np.isin(full.labels, classes)
        if split == "train" and label_fraction < 1.0:
            rng = np.random.default_rng(seed)
            keep = np.zeros_like(keep)
            for label in classes:
                members = np.flatnonzero(full.labels == label)
                keep[rng.choice(members, round(label_fraction * len(members)), replace=False)] = True
        relabel = np.full(max(full.num_classes, max(classes) + 1), -1, np.int32)
        relabel[list(classes)] = np.arange(len(classes))
        return dataclasses.replace(
            full,
            name=name,
            images=full.images[keep],
            labels=relabel[full.labels[keep]],
            class_names=tuple(full.class_names[c] for c in classes),
        )

    return load


def register_datasets(label_fraction: float) -> tuple[str, str]:
    source, target = "fashion_mnist_0to4", f"fashion_mnist_5to9_{label_fraction:g}"
    for name, classes, fraction in ((source, SOURCE_CLASSES, 1.0), (target, TARGET_CLASSES, label_fraction)):
        data.register(name, class_subset(name, classes, fraction), overwrite=True)
    return source, target


def pretrain_config(model: str, dataset: str, epochs: int):
    config = default_config()
    config.update_from_flattened_dict(
        {"model": model, "dataset": dataset, "num_epochs": epochs, "batch_size": 128, "optimizer": "adam",
         "learning_rate": 2e-3, "optim.schedule": "warmup_cosine", "optim.warmup_steps": 100,
         "augment.crop_padding": 2, "augment.flip": True, "log_every": 100, "checkpoint_every": 1000}
    )  # fmt: skip
    return config


def finetune_config(
    model: str, dataset: str, steps: int, init_from: str = "", freeze: str = "", learning_rate: float = 1e-3
):
    config = default_config()
    config.update_from_flattened_dict(
        {"model": model, "dataset": dataset, "num_steps": steps, "batch_size": 50, "optimizer": "adam",
         "learning_rate": learning_rate, "optim.schedule": "warmup_cosine", "optim.warmup_steps": 20,
         "augment.crop_padding": 2, "augment.flip": True, "log_every": 50, "checkpoint_every": steps,
         "eval.every": steps, "finetune.init_from": init_from, "finetune.freeze": freeze,
         "finetune.new_head": bool(init_from)}
    )  # fmt: skip
    return config


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--model", default="compact")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--label-fraction", type=float, default=0.01)
    args = parser.parse_args(argv)
    jaxcnn.configure_cpu()
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)
    source, target = register_datasets(args.label_fraction)
    pretrained = args.workdir / "pretrain"
    base = train_and_evaluate(pretrain_config(args.model, source, args.pretrain_epochs), pretrained)
    runs = {
        # a linear head on frozen features takes larger steps than a whole network that is already trained
        "head only (backbone frozen)": finetune_config(
            args.model, target, args.finetune_steps, str(pretrained), "backbone", learning_rate=1e-2
        ),
        "whole network": finetune_config(args.model, target, args.finetune_steps, str(pretrained)),
        "from scratch": finetune_config(args.model, target, args.finetune_steps),
    }
    rows = [
        {"setting": f"pretraining on classes 0-4 ({args.pretrain_epochs} epochs, all labels)",
         "accuracy": base.test_accuracy, "seconds": base.seconds}
    ]  # fmt: skip
    for (setting, config), workdir in zip(runs.items(), ("head", "whole", "scratch"), strict=True):
        result = train_and_evaluate(config, args.workdir / workdir)
        rows.append({"setting": setting, "accuracy": result.test_accuracy, "seconds": result.seconds})
    labels = round(args.label_fraction * 30_000)
    table = [
        f"Fashion-MNIST, `{args.model}`: classes 5-9 learnt from {labels} labelled images "
        f"({args.label_fraction:g} of theirs), {args.finetune_steps} steps of 50; test accuracy on their "
        "5,000 test images.",
        "",
        "| setting | test accuracy | time |",
        "| --- | ---: | ---: |",
        *(f"| {r['setting']} | {100 * r['accuracy']:.2f}% | {r['seconds']:.0f} s |" for r in rows),
    ]
    print("\n".join(table))
    (args.workdir / "transfer.md").write_text("\n".join(table) + "\n")
    (args.workdir / "transfer.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
