"""Atomic, resumable checkpoints with Orbax.

A checkpoint holds everything a run needs to continue bit-identically: the train state
(step, params, optimizer state, BatchNorm statistics, RNG), the metric sums since the last
log line, and a small JSON record of the data position and the training time so far. Orbax
writes each step to a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact (the next run removes the temporary directory).
Each checkpoint also holds a checksum of every array (`checksums`, next to the arrays, renamed with
them): Orbax's files have none over the data (tensorstore's zarr2 chunks, zstd-compressed, decode a
flipped bit or a garbled block into other numbers without an error), so a restore recomputes them.
A checkpoint that cannot be read, or whose arrays differ from their checksums, is moved aside, into
`unreadable/`, when an older one can be read; one saved before checksums existed is restored unverified,
with a warning. A save that finds the disk full stops the run with one line that says how much space a
checkpoint needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from jaxcnn._validate import Settings, integer
from jaxcnn.training.state import TrainState

_STATE_FIELDS = ("step", "params", "opt_state", "batch_stats", "rng")
UNREADABLE = "unreadable"  # where unreadable checkpoints are kept: not a step number, so Orbax ignores it
_DISK_FULL = os.strerror(errno.ENOSPC)  # "No space left on device", also in tensorstore's messages
CHECKSUMS = "checksums"  # the item of a checkpoint that holds its arrays' checksums


@dataclasses.dataclass(frozen=True)
class CheckpointSettings(Settings):
    """`config.checkpoints`: how many of the newest checkpoints are kept (`config.checkpoint_every` says
    how often one is saved); may change when a run is resumed."""

    keep: int = dataclasses.field(default=3, metadata={"resumable": True})

    def __post_init__(self):
        integer(self.keep, "keep", minimum=1)


class CheckpointError(RuntimeError):
    """No usable checkpoint in a directory that has some, or no room to write one."""


def _state_tree(state: TrainState) -> dict[str, Any]:
    fields = _STATE_FIELDS + (("ema_params",) if state.ema_params is not None else ())
    return {field: getattr(state, field) for field in fields}


# A checksum of an array's logical content, whatever its sharding: the sum, modulo 2**32, of
# fmix32(word + position * golden ratio) over its 32-bit words (narrower elements widened to one word),
# where position is the word's index in the whole array read in C order. A sum adds up the shards each
# process holds in any order; fmix32 (MurmurHash3's finaliser) is a bijection, so any change within one
# word changes the sum, and the position term makes moved or swapped words count.
CHECKSUM_ALGORITHM = "sum mod 2**32 of fmix32(uint32 word + C-order word index * 0x9E3779B9)"
_GOLDEN = np.uint32(0x9E3779B9)


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, in place on a uint32 array (wrapping arithmetic)."""
    h ^= h >> 16
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> 13
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> 16
    return h


def _word_positions(index: tuple[slice, ...], shape: tuple[int, ...], words: int) -> np.ndarray:
    """The C-order indices, in the whole array of `shape`, of the `words` words of each element of its
    part `index`: uint32 (wrapping), flat."""
    ranges = [part.indices(size) for part, size in zip(index, shape)]
    if all(r == (0, size, 1) for r, size in zip(ranges, shape)):  # the whole array: one device holds it
        return np.arange(words * int(np.prod(shape)), dtype=np.uint32)
    strides = np.cumprod((words, *shape[:0:-1]))[::-1] % 2**32  # in words
    axes = [np.arange(*r, dtype=np.uint32) * np.uint32(stride) for r, stride in zip(ranges, strides)]
    starts = sum(np.ix_(*axes), np.uint32(0)).reshape(-1, 1)
    return (starts + np.arange(words, dtype=np.uint32)).reshape(-1)


def _block_checksum(block: np.ndarray, index: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    """The checksum terms of `block`, the part `index` of an array of `shape`, summed."""
    values = np.ascontiguousarray(block).reshape(-1)
    if values.dtype.itemsize >= 4:
        words = values.view(np.uint32)
    else:
        words = values.view(f"u{values.dtype.itemsize}").astype(np.uint32)
    h = _word_positions(index, shape, max(values.dtype.itemsize // 4, 1))
    h *= _GOLDEN
    h += words
    return int(_fmix32(h).sum(dtype=np.uint32))


def _local_checksum(leaf) -> int:
    """This process's part of `leaf`'s checksum: the shards it holds that no other device's copy
    duplicates (a numpy array, the same on every process, counts on process 0)."""
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)  # a typed key (DP-SGD's noise) has no numpy form: its words do
    if isinstance(leaf, jax.Array):
        blocks = [(shard.data, shard.index) for shard in leaf.addressable_shards if shard.replica_id == 0]
    else:
        blocks = [] if jax.process_index() else [(leaf, (slice(None),) * np.ndim(leaf))]
    return sum(_block_checksum(np.asarray(data), index, np.shape(leaf)) for data, index in blocks) % 2**32


def _key_name(key) -> str:
    """A path element as Orbax names it, so that a tree restored without a template (tuples as lists,
    named tuples as dicts) has the paths of the tree that was saved."""
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def checksums(items: dict[str, Any]) -> dict[str, int]:
    """The checksum of every array of `items` (name -> tree), by path (`state/params/conv1/kernel`).

    Collective with several processes: each sums the shards it holds, and the sums are added up."""
    paths, local = [], []
    for path, leaf in jax.tree_util.tree_leaves_with_path(items):
        paths.append("/".join(map(_key_name, path)))
        local.append(_local_checksum(leaf))
    sums = np.asarray(local, np.uint32)
    if jax.process_count() > 1:
        sums = np.sum(multihost_utils.process_allgather(sums), axis=0, dtype=np.uint32)
    return dict(zip(paths, map(int, sums)))


def _differences(restored) -> str | None:
    """What of the `restored` items differs from the checksums restored with them (None: nothing)."""
    stored = restored[CHECKSUMS]  # a damaged file may hold other JSON: then nothing matches
    saved = stored.get("checksums", {}) if isinstance(stored, dict) else {}
    arrays = {name: tree for name, tree in restored.items() if name in ("state", "metric_sums")}
    differ = [path for path, checksum in checksums(arrays).items() if saved.get(path) != checksum]
    if not differ:
        return None
    shown = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
    return f"its data differs from the checksums saved with it ({shown})"


def tree_bytes(tree: Any) -> int:
    """The bytes of a tree's arrays: about what a checkpoint of it takes on disk."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def _directory_bytes(path: str | os.PathLike) -> int:
    """The bytes of the files under `path` (0 if it does not exist)."""
    return sum(file.stat().st_size for file in Path(path).rglob("*") if file.is_file())


def saved_steps(directory: str | os.PathLike) -> list[int]:
    """The steps of the complete checkpoints in `directory` (none if it does not exist), read from the
    directory names alone."""
    return sorted(ocp.utils.checkpoint_steps(directory))


def replaceable_bytes(directory: str | os.PathLike) -> int:
    """The bytes of what a run deletes in `directory` as it saves: its checkpoints, complete or not
    (those moved aside as unreadable are kept)."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    return sum(_directory_bytes(path) for path in directory.iterdir() if path.name != UNREADABLE)


_UNITS = ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"), (1, "bytes"))


def sizes(a: int, b: int) -> tuple[str, str]:
    """Two byte counts in one unit, with as many decimals as it takes for them to read differently."""
    unit, name = next((unit, name) for unit, name in _UNITS if max(a, b) >= 10 * unit or unit == 1)
    decimals = 0
    while round(a / unit, decimals) == round(b / unit, decimals) and 10**decimals < unit:
        decimals += 1
    return f"{a / unit:,.{decimals}f} {name}", f"{b / unit:,.{decimals}f} {name}"


def _is_disk_full(error: BaseException | None) -> bool:
    """Whether `error` or one it came from is ENOSPC (Orbax and tensorstore re-raise it as other types)."""
    while error is not None:
        if getattr(error, "errno", None) == errno.ENOSPC or _DISK_FULL in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


class _DropDiskFullRecords(logging.Filter):
    """Orbax's background threads log each failed write of a full disk with its traceback;
    `Checkpoints` reports it once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            _DISK_FULL in record.getMessage() or _is_disk_full(record.exc_info and record.exc_info[1])
        )


def _everywhere(ok: bool) -> bool:
    """True if `ok` on every process: processes restore and save collectively, so they decide together."""
    if jax.process_count() == 1:
        return ok
    return bool(np.min(multihost_utils.process_allgather(np.int32(ok))))


class Checkpoints:
    """The checkpoints of one run: `save` every so often, `restore_latest` on start.

    The run that writes them owns the directory: on start it removes what an unfinished save left,
    and moves unreadable checkpoints aside. With `read_only` (a reader of another run's checkpoints,
    which may be saving one now), nothing is moved or removed, and `save` is refused.
    """

    def __init__(self, directory: str | os.PathLike, max_to_keep: int = 3, *, read_only: bool = False):
        self.directory = os.path.abspath(os.fspath(directory))
        self.read_only = read_only
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=not read_only, cleanup_tmp_directories=not read_only
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._checkpoint_bytes = 0
        self._verified: set[int] = set()  # saved here, or restored with matching checksums
        self._quiet = _DropDiskFullRecords()
        for name in ("absl", "asyncio"):  # Orbax logs through absl; asyncio logs its tasks' failures
            logging.getLogger(name).addFilter(self._quiet)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def newest(self) -> tuple[int, str] | None:
        """`(step, path)` of the newest checkpoint (one being written in the background included), or None."""
        step = self._manager.latest_step()
        return None if step is None else (step, os.path.join(self.directory, str(step)))

    def verified(self, step: int) -> bool:
        """Whether checkpoint `step` is known to hold what was saved: this object saved it, or restored
        it and its checksums matched (False for one saved without checksums, by an older jaxcnn)."""
        return step in self._verified

    def save(self, state: TrainState, metrics: Any, position: dict[str, float]) -> None:
        """Saves at `state.step` (asynchronously; the next save or `close` waits for it), with the
        checksums of its arrays (computed on the host first: about 15 ms for resnet20's state).

        Raises:
          CheckpointError: the disk has no room for it (checked first), or filled up while the
            previous save was written.
        """
        if self.read_only:
            raise CheckpointError(f"{self.directory} was opened read-only: no checkpoint can be saved")
        step = int(jax.device_get(state.step))
        tree = _state_tree(state)
        with self._reporting_disk_full():
            self._manager.wait_until_finished()  # the previous save, so its rotation has freed its space
            newest = self.newest()
            self._checkpoint_bytes = max(tree_bytes(tree), _directory_bytes(newest[1]) if newest else 0)
            if not _everywhere(shutil.disk_usage(self.directory).free >= self._checkpoint_bytes):
                raise self._disk_full()
            sums = checksums({"state": tree, "metric_sums": metrics})
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree),
                    metric_sums=ocp.args.StandardSave(metrics),
                    position=ocp.args.JsonSave(position),
                    **{CHECKSUMS: ocp.args.JsonSave({"algorithm": CHECKSUM_ALGORITHM, "checksums": sums})},
                ),
                force=True,
            )
            self._verified.add(step)

    def _disk_full(self) -> CheckpointError:
        free, needed = sizes(shutil.disk_usage(self.directory).free, self._checkpoint_bytes)
        complete = saved_steps(self.directory)
        resume = f"from step {complete[-1]}" if complete else "from the start"
        return CheckpointError(
            f"not enough space on the disk of {self.directory} for a checkpoint: it needs about {needed}, "
            f"{free} is free; free some space and run the same command again (it resumes {resume})"
        )

    @contextlib.contextmanager
    def _reporting_disk_full(self):
        """Orbax's and tensorstore's errors of a full disk (raised here, or in the background and
        re-raised at the next wait) as one `CheckpointError`."""
        try:
            yield
        except CheckpointError:
            raise
        except Exception as error:
            if not _is_disk_full(error):
                raise
            raise self._disk_full() from error

    def restore_latest(
        self, template: TrainState, template_metrics: Any
    ) -> tuple[TrainState, Any, dict[str, Any]] | None:
        """The newest readable checkpoint as `(state, metrics, position)`, or None if there is none.

        A checkpoint that fails to load, or whose arrays differ from the checksums saved with them, is
        skipped with a warning naming it. Unless `read_only`, the skipped ones are then moved aside, into
        `unreadable/STEP-TIME` (kept for a post-mortem, and out of the way of this run's saves of the same
        steps), each with a warning naming its new path. If none loads, `CheckpointError` names the
        directory and nothing is moved.
        """
        abstract_state, abstract_metrics = jax.tree.map(
            ocp.utils.to_shape_dtype_struct, (_state_tree(template), template_metrics)
        )
        step, restored = self._newest_readable(
            state=ocp.args.StandardRestore(abstract_state),
            metric_sums=ocp.args.StandardRestore(abstract_metrics),
            position=ocp.args.JsonRestore(),
        )
        if restored is None:
            return None
        return template.replace(**restored["state"]), restored["metric_sums"], dict(restored["position"])

    def read_latest_state(self) -> tuple[int, dict] | None:
        """`(step, state)` of the newest readable checkpoint (as `restore_latest` finds it), or None if
        there is none: the train state's fields (`params`, `batch_stats`, `opt_state`, ...) as numpy
        arrays in dicts and lists, read without a template whatever devices wrote them (what a
        fine-tuning run or an export takes from another run's checkpoints)."""
        with warnings.catch_warnings():
            # read to the host whatever devices wrote it: the saved sharding does not matter here
            warnings.filterwarnings("ignore", "Sharding info not provided", UserWarning)
            step, restored = self._newest_readable(state=ocp.args.StandardRestore())
        if step is None or restored is None:  # both or neither
            return None
        return step, jax.tree.map(np.asarray, restored["state"])

    def _newest_readable(self, **items) -> tuple[int | None, dict | None]:
        """`(step, items restored with these Orbax args)` of the newest checkpoint that reads and matches
        its checksums, the unreadable newer ones set aside (unless `read_only`); `(None, None)` if there
        is no checkpoint. Raises `CheckpointError` if none reads."""
        unreadable: list[int] = []  # steps
        for step in reversed(self.steps()):
            restored = self._restore(step, items)
            if restored is not None:
                if not self.read_only:
                    self._set_aside(unreadable)
                return step, restored
            unreadable.append(step)
        if unreadable:
            afresh = (
                "" if self.read_only else "; remove that directory (or use a new --workdir) to start afresh"
            )
            raise CheckpointError(
                f"none of the checkpoints {sorted(unreadable)} in {self.directory} could be read{afresh}"
            )
        return None, None

    def _restore(self, step: int, items: dict[str, Any]) -> dict | None:
        """The `items` of checkpoint `step`, or None (with a warning) if any process fails to read it or
        finds that it differs from its checksums (all processes take part: the checksums are collective)."""
        path = os.path.join(self.directory, str(step))
        with_checksums = os.path.isdir(os.path.join(path, CHECKSUMS))
        restored, error = None, None
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    **items, **({CHECKSUMS: ocp.args.JsonRestore()} if with_checksums else {})
                ),
            )
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
            error = f"{type(e).__name__}: {e}"
        if _everywhere(error is None) and with_checksums:
            error = _differences(restored)
        if _everywhere(error is None):
            if with_checksums:
                self._verified.add(step)
            else:
                logging.warning(
                    "Checkpoint %s has no checksums (an older jaxcnn saved it): not verified", path
                )
            return restored
        logging.warning(
            "Skipping unreadable checkpoint %s: %s", path, error or "another process could not read it"
        )
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves the checkpoints of `steps` into `unreadable/` (process 0; the others wait for it)."""
        if not steps:
            return
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            for step in steps:
                source = Path(self.directory, str(step))
                target = Path(self.directory, UNREADABLE, f"{step}-{stamp}")
                target.parent.mkdir(exist_ok=True)
                for suffix in range(1, 1000):  # another of this step moved aside in the same second
                    if not target.exists():
                        break
                    target = target.with_name(f"{step}-{stamp}-{suffix}")
                source.rename(target)
                logging.warning("Moved unreadable checkpoint %s to %s", source, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("jaxcnn: unreadable checkpoints set aside")
        self._manager.reload()

    def close(self) -> None:
        try:
            with self._reporting_disk_full():
                self._manager.wait_until_finished()
            self._manager.close()
        finally:
            for name in ("absl", "asyncio"):
                logging.getLogger(name).removeFilter(self._quiet)
