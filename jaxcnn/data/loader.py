"""A run's training batches as a Grain pipeline: batch k of the run is element k of a `grain.MapDataset`.

    stream = training_batches(train, 128, seed=0, steps_per_epoch=468, start_step=0, stop_step=936, workers=2)
    next(stream)["image"]   # (128, 28, 28, 1) uint8: `data.batches(..., normalized=False)`, seed 0, epoch 0

Element k is global batch `k % steps_per_epoch` of epoch `k // steps_per_epoch`, shuffled from (seed, epoch)
and split over processes exactly as `data.batches` does (it calls the same `batch_of`), so the batches, and
the runs trained on them, are those of the plain iterator. The images stay uint8, as stored: the run's
compiled step normalizes them (`data.normalize_on_device`, bit-identical to `data.normalize`), so a batch
is a quarter of the bytes to gather, pass from a worker and move to the device. Grain's state of this
pipeline is the index of the next element, which is the run's step: the step a checkpoint records is its
whole iterator state, and a resumed run starts the dataset at it (`start_step`), bit-identically. With
`workers` > 0 the batches are gathered (and lazy images read and decoded) in that many worker processes
(Grain's `mp_prefetch`), returned in order.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from jaxcnn._validate import integer
from jaxcnn.data.datasets import ArrayDataset
from jaxcnn.data.pipeline import BACKGROUND_NICENESS, batch_of, epoch_order, pack_batches


class BatchAt:
    """Element `step` of the stream: this process's share of that step's global batch. Picklable, for
    Grain's worker processes; keeps the permutation of the epoch it last served."""

    def __init__(self, dataset: ArrayDataset, batch_size: int, seed: int, steps_per_epoch: int,
                 process_index: int, process_count: int):  # fmt: skip
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.steps_per_epoch, self.process_index, self.process_count = (
            steps_per_epoch,
            process_index,
            process_count,
        )
        self._epoch, self._order = -1, np.empty(0, np.int64)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        epoch, index = divmod(int(step), self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._order = epoch, epoch_order(len(self.dataset), self.seed, epoch)
        return batch_of(
            self.dataset,
            self._order,
            index,
            self.batch_size,
            self.process_index,
            self.process_count,
            normalized=False,
            draw=(self.seed, epoch),
        )


def _start_worker(worker_index: int, worker_count: int) -> None:
    """Run in each worker process as it starts. It yields the CPU to the training process when they
    compete (`BACKGROUND_NICENESS`: a training step descheduled mid-way stalls its other threads, a decoding
    worker only falls behind, which the prefetched batches absorb), and it exits when the training process
    has gone (a run killed with SIGKILL cannot stop its workers, which would otherwise live on as orphans)."""
    os.nice(BACKGROUND_NICENESS)  # inherited by the threads Grain starts in this process after it
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def training_batches(
    dataset: ArrayDataset,
    batch_size: int,
    *,
    seed: int,
    steps_per_epoch: int,
    start_step: int,
    stop_step: int,
    workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """The batches of steps `[start_step, stop_step)` of a run, as a Grain iterator (close it when done:
    it owns the worker processes).

    Raises:
      ValueError: `steps_per_epoch` whole batches do not fit in `dataset`, or a bad count.
    """
    batch_at = _batch_at(dataset, batch_size, seed, steps_per_epoch, start_step, stop_step, workers,
                         process_index, process_count)  # fmt: skip
    return _stream(grain.MapDataset.range(start_step, stop_step).map(batch_at), workers)


def call_steps(call: int, steps_per_call: int, start_step: int, stop_step: int) -> range:
    """The steps of call `call` of a run: calls of `steps_per_call` steps aligned to its multiples (call c
    runs steps `[c·k, (c+1)·k)`), clipped to `[start_step, stop_step)`; so the first call of a run resumed
    between multiples, and its last, may be shorter."""
    return range(max(call * steps_per_call, start_step), min((call + 1) * steps_per_call, stop_step))


class CallAt:
    """Element `call` of the stream of calls: the packed batches (`pack_batches`) of its steps
    (`call_steps`). Picklable, for Grain's worker processes."""

    def __init__(self, batch_at: BatchAt, steps_per_call: int, start_step: int, stop_step: int):
        self.batch_at, self.steps_per_call = batch_at, steps_per_call
        self.start_step, self.stop_step = start_step, stop_step

    def __call__(self, call: int) -> np.ndarray:
        steps = call_steps(int(call), self.steps_per_call, self.start_step, self.stop_step)
        return pack_batches([self.batch_at(step) for step in steps])


def training_calls(
    dataset: ArrayDataset,
    batch_size: int,
    *,
    seed: int,
    steps_per_epoch: int,
    start_step: int,
    stop_step: int,
    steps_per_call: int,
    workers: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[np.ndarray]:
    """`training_batches`, a call's steps at a time (`call_steps`): each element is one uint8 array
    `(B_local, steps, R)`, the call's batches packed by `pack_batches`, one array to move to the device.

    Raises:
      ValueError: as `training_batches`, or `steps_per_call` < 1.
    """
    integer(steps_per_call, "steps_per_call", minimum=1)
    batch_at = _batch_at(dataset, batch_size, seed, steps_per_epoch, start_step, stop_step, workers,
                         process_index, process_count)  # fmt: skip
    calls = grain.MapDataset.range(start_step // steps_per_call, -(-stop_step // steps_per_call))
    return _stream(calls.map(CallAt(batch_at, steps_per_call, start_step, stop_step)), workers)


def _batch_at(dataset: ArrayDataset, batch_size: int, seed: int, steps_per_epoch: int, start_step: int,
              stop_step: int, workers: int, process_index: int, process_count: int) -> BatchAt:  # fmt: skip
    """The checked arguments of `training_batches` as the function of a step."""
    for key, value, minimum in (("batch_size", batch_size, 1), ("steps_per_epoch", steps_per_epoch, 1),
                                ("start_step", start_step, 0), ("workers", workers, 0),
                                ("process_count", process_count, 1)):  # fmt: skip
        integer(value, key, minimum=minimum)
    integer(stop_step, "stop_step", minimum=start_step)
    integer(process_index, "process_index", minimum=0, maximum=process_count - 1)
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be divisible by process_count {process_count}")
    if steps_per_epoch * batch_size > len(dataset):
        raise ValueError(
            f"steps_per_epoch {steps_per_epoch} batches of {batch_size} exceed the {len(dataset)} examples"
        )
    return BatchAt(dataset, batch_size, seed, steps_per_epoch, process_index, process_count)


def _stream(elements: grain.MapDataset, workers: int) -> Iterator:
    """An iterator of `elements`, made in `workers` processes (0: in this one)."""
    # In memory, reading is a gather: threads would only contend for the GIL (Grain's advice).
    stream = elements.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if workers:
        if not flags.FLAGS.is_parsed():  # Grain 0.2.18 reads its absl flags, unparsed outside an absl app
            flags.FLAGS.mark_as_parsed()
        stream = stream.mp_prefetch(
            grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2),
            worker_init_fn=_start_worker,
        )
    return iter(stream)
