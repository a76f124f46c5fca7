"""Evaluation: loss and accuracy over a whole split, with optional test-time views."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import jax

from jaxcnn import data
from jaxcnn._validate import Settings, boolean, integer
from jaxcnn.parallel import SingleDevice
from jaxcnn.training import steps
from jaxcnn.training.state import TrainState


@dataclasses.dataclass(frozen=True)
class EvalSettings(Settings):
    """`config.eval`: when and how the test split is scored.

    Attributes:
      every: steps between evaluations; 0 = once per epoch (and always at the end).
      batch_size: examples per evaluation batch (fewer for a small test split).
      flip: test-time augmentation: each test image's logits averaged with its mirror image's.
      shift: > 0: test-time augmentation: the logits averaged with those of the image moved this many
        pixels up, down, left and right (zero-filled, as `augment.crop_padding`'s crops); with `flip`, of
        each mirrored too.
    """

    every: int = dataclasses.field(default=0, metadata={"resumable": True})
    batch_size: int = dataclasses.field(default=1000, metadata={"resumable": True})
    flip: bool = False
    shift: int = 0

    def __post_init__(self):
        integer(self.every, "every", minimum=0)
        integer(self.batch_size, "batch_size", minimum=1)
        boolean(self.flip, "flip")
        integer(self.shift, "shift", minimum=0)


def evaluate(
    eval_fn: Callable[..., Any],
    state: TrainState,
    dataset: data.ArrayDataset,
    batch_size: int,
    strategy: SingleDevice,
) -> dict[str, float]:
    """Loss and accuracy over every example of `dataset` (the last batch padded and masked), with
    `eval_fn(state, batch) -> metric sums` compiled by `strategy`, on batches of uint8 images (see
    `steps.normalizing`)."""
    total = None
    for batch in data.batches(
        dataset,
        batch_size,
        seed=0,
        epoch=0,
        shuffle=False,
        drop_remainder=False,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        normalized=False,
    ):
        metrics = eval_fn(state, strategy.put_batch(batch))
        total = metrics if total is None else steps.add_metrics(total, metrics)
    # Means over the dataset's examples: None is summarize's for a window with none (every step skipped).
    return cast(dict[str, float], steps.summarize(strategy.host_value(total)))
