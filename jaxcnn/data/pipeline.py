"""Batches from an `ArrayDataset`: deterministic order from (seed, epoch), split over processes.

A resumed run asks for the same (seed, epoch) and skips `start_batch` batches, so it sees exactly
the batches an uninterrupted run would. Every batch is a dict of numpy arrays:
`image` `(B, H, W, C)` float32 normalized, `label` `(B,)` int32, `mask` `(B,)` float32 (0 on padding, and
on an image that could not be decoded: see `batch_of`).
With `normalized=False` the images stay uint8, as stored, for a compiled program to normalize them on the
device (`normalize_on_device`, bit-identical): what a training run does, moving a quarter of the bytes.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcnn._validate import integer
from jaxcnn.data.datasets import ArrayDataset, LazyImages


def normalize(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images to float32 with per-channel `(x / 255 - mean) / std`."""
    scale = np.float32(1 / 255) / np.asarray(std, np.float32)
    # One new array, then updated in place: each allocation of a batch's size faults its pages in again.
    normalized = np.multiply(images, scale, dtype=np.float32)
    normalized -= np.asarray(mean, np.float32) / np.asarray(std, np.float32)
    return normalized


def normalize_on_device(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
    """`normalize` for uint8 images on the device (inside a jitted program), equal to it bit for bit.

    Each value is looked up in a table of `normalize`'s 256 results per channel: the same arithmetic in
    XLA may be fused into a multiply-add and round differently.

    Raises:
      TypeError: `images` are not uint8.
      ValueError: `mean` and `std` do not have one value per channel of `images` (its last axis).
    """
    if images.dtype != jnp.uint8:
        raise TypeError(f"images must be uint8 (as datasets store them), got {images.dtype}")
    channels = len(mean)
    if not len(std) == channels == images.shape[-1]:
        raise ValueError(
            f"mean and std need one value per channel of images ({images.shape[-1]}), "
            f"got {channels} and {len(std)}"
        )
    values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
    table = normalize(values, mean, std).T.reshape(-1)  # channel c's value v at c * 256 + v
    return jnp.asarray(table)[images.astype(jnp.int32) + 256 * jnp.arange(channels)]


_LABEL = np.dtype("<i4")  # a label's bytes in a packed row: int32, little-endian as every JAX device


def pack_batches(batches: Sequence[dict[str, np.ndarray]]) -> np.ndarray:
    """The uint8 batches of one call (`batch_of(..., normalized=False)`, each `B` examples) as one uint8
    array `(B, steps, R)`: row `[b, s]` holds example b of step s, its image's bytes, its label's 4 bytes,
    then its mask (0 or 1) in one byte. One array moves to the device where three did; batch-major, so a
    strategy splits and shards its first axis as it does a batch's. `unpack_on_device` reads a step back.

    Raises:
      TypeError: the images are not uint8.
    """
    first = batches[0]
    if first["image"].dtype != np.uint8:
        raise TypeError(f"batches' images must be uint8 (normalized=False), got {first['image'].dtype}")
    examples, pixels = first["image"].shape[0], first["image"][0].size
    packed = np.empty((examples, len(batches), pixels + _LABEL.itemsize + 1), np.uint8)
    for step, batch in enumerate(batches):
        packed[:, step, :pixels] = batch["image"].reshape(examples, pixels)
        packed[:, step, pixels:-1] = batch["label"].astype(_LABEL).view(np.uint8).reshape(examples, -1)
        packed[:, step, -1] = batch["mask"]
    return packed


def unpack_on_device(rows: jax.Array, image_shape: Sequence[int]) -> dict[str, jax.Array]:
    """One step's batch `{"image": (B, *image_shape) uint8, "label": (B,) int32, "mask": (B,) float32}`
    from its packed rows `(B, R)` (`pack_batches[:, step]`), inside a compiled program; bit-exact."""
    pixels = math.prod(image_shape)
    return {
        "image": rows[:, :pixels].reshape(-1, *image_shape),
        "label": lax.bitcast_convert_type(rows[:, pixels:-1], jnp.int32),
        "mask": rows[:, -1].astype(jnp.float32),
    }


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool = True) -> int:
    """How many batches `batches` yields for `num_examples` examples."""
    return num_examples // batch_size if drop_remainder else -(-num_examples // batch_size)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of example indices for `epoch`: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def batches(
    dataset: ArrayDataset,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_remainder: bool = True,
    start_batch: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    normalized: bool = True,
) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of batches; this process's share of each global batch of `batch_size` examples.

    Process `p` of `P` gets rows `[p·B/P, (p+1)·B/P)` of every global batch, so the processes together
    see the batch one process would. Without `drop_remainder` the last batch is padded with zero
    images and masked out, keeping every batch the same shape (one compilation). `normalized=False`
    leaves the images uint8 (see the module's docstring).
    """
    for key, value, minimum in (("batch_size", batch_size, 1), ("start_batch", start_batch, 0),
                                ("process_count", process_count, 1), ("epoch", epoch, 0)):  # fmt: skip
        integer(value, key, minimum=minimum)
    integer(process_index, "process_index", minimum=0, maximum=process_count - 1)
    if batch_size % process_count:
        raise ValueError(f"batch_size {batch_size} must be divisible by process_count {process_count}")
    order = epoch_order(len(dataset), seed, epoch) if shuffle else np.arange(len(dataset))
    for b in range(start_batch, num_batches(len(dataset), batch_size, drop_remainder)):
        yield batch_of(dataset, order, b, batch_size, process_index, process_count, normalized, (seed, epoch))


def batch_of(
    dataset: ArrayDataset,
    order: np.ndarray,
    index: int,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    normalized: bool = True,
    draw: tuple[int, ...] = (),
) -> dict[str, np.ndarray]:
    """This process's share of global batch `index` of the examples in `order` (see `batches`); `draw`,
    the `(seed, epoch)` of `order`, seeds the random views of images that have them (`LazyImages.gather`).

    An image that its `LazyImages` skips (`gather`: one of an image folder that does not decode) keeps its
    place, masked out (mask 0: in no loss, gradient or metric), holding a copy of the batch's first readable
    example and its label: BatchNorm's batch statistics and Mixup's partner then meet a real image.
    """
    local = batch_size // process_count
    rows = order[index * batch_size + process_index * local :][:local]
    if isinstance(dataset.images, LazyImages):
        images, readable = dataset.images.gather(rows, draw)
    else:
        images, readable = dataset.images[rows], np.ones(len(rows), bool)
    labels, mask = dataset.labels[rows], readable.astype(np.float32)
    if readable.any() and not readable.all():
        stand_in = np.argmax(readable)
        images[~readable], labels[~readable] = images[stand_in], labels[stand_in]
    if normalized:
        images = normalize(images, dataset.mean, dataset.std)
    if len(rows) < local:  # the padded last batch (only without drop_remainder)
        pad = local - len(rows)
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        mask = np.concatenate([mask, np.zeros(pad, np.float32)])
    return {"image": images, "label": labels, "mask": mask}


BACKGROUND_NICENESS = 10  # how much lower the input pipeline's scheduling priority is than the step's


def yield_to_the_step() -> None:
    """Lowers the scheduling priority of the calling thread by `BACKGROUND_NICENESS` (on Linux a thread has
    its own; elsewhere this would lower the whole process, so it does nothing there). A compiled step
    descheduled mid-way stalls its other threads; a thread producing batches only falls behind, which the
    batches produced ahead absorb."""
    if sys.platform == "linux":
        os.nice(BACKGROUND_NICENESS)


class prefetch:  # noqa: N801 - used like a function
    """Iterates `transform(item)` for the items of `iterator`, computed `size` ahead in a thread.

    Keeps host batching and the transfer to devices (`transform`, e.g. a `device_put`) off the training
    step's critical path, at a lower priority than the step's threads (`yield_to_the_step`). An exception
    in the thread is raised by `next`; `close()` stops the thread, then closes `iterator` if it can be (a
    Grain iterator's worker processes).
    """

    _END = object()

    def __init__(self, iterator: Iterator, size: int = 2, transform: Callable | None = None):
        integer(size, "size", minimum=1)
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._source = iter(iterator)
        self._thread = threading.Thread(
            target=self._produce, args=(self._source, transform or (lambda x: x)), daemon=True
        )
        self._thread.start()

    def _produce(self, iterator, transform):
        yield_to_the_step()
        try:
            for item in iterator:
                if not self._put((transform(item), None)):
                    return
            self._put((self._END, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            self._put((self._END, error))

    def _put(self, entry) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        return self

    def __next__(self):
        item, error = self._queue.get()
        if error is not None:
            self.close()
            raise error
        if item is self._END:
            self._queue.put((self._END, None))  # later calls stop too
            raise StopIteration
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if hasattr(self._source, "close"):
            self._source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
