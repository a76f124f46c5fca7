"""Atomic, resumable checkpoints with Orbax.

A checkpoint holds everything a run needs to continue bit-identically: the train state
(step, params, optimizer state, BatchNorm statistics, RNG), the metric sums since the last
log line, and a small JSON record of the data position and the training time so far. Orbax
writes each step to a temporary directory and renames it when complete, so a run killed
mid-save leaves the previous checkpoint intact (the next run removes the temporary directory).
A checkpoint that cannot be read is moved aside, into `unreadable/`, when an older one can; a save
that finds the disk full stops the run with one line that says how much space a checkpoint needs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import shutil
import time
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


def tree_bytes(tree) -> int:
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
        self._quiet = _DropDiskFullRecords()
        for name in ("absl", "asyncio"):  # Orbax logs through absl; asyncio logs its tasks' failures
            logging.getLogger(name).addFilter(self._quiet)

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def newest(self) -> tuple[int, str] | None:
        """`(step, path)` of the newest checkpoint (one being written in the background included), or None."""
        step = self._manager.latest_step()
        return None if step is None else (step, os.path.join(self.directory, str(step)))

    def save(self, state: TrainState, metrics: Any, position: dict[str, float]) -> None:
        """Saves at `state.step` (asynchronously; the next save or `close` waits for it).

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
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(tree),
                    metric_sums=ocp.args.StandardSave(metrics),
                    position=ocp.args.JsonSave(position),
                ),
                force=True,
            )

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

    def restore_latest(self, template: TrainState, template_metrics: Any):
        """The newest readable checkpoint as `(state, metrics, position)`, or None if there is none.

        A checkpoint that fails to load is skipped with a warning naming it. Unless `read_only`, the
        skipped ones are then moved aside, into `unreadable/STEP-TIME` (kept for a post-mortem, and out
        of the way of this run's saves of the same steps), each with a warning naming its new path. If
        none loads, `CheckpointError` names the directory and nothing is moved.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, (_state_tree(template), template_metrics))
        unreadable = []
        for step in reversed(self.steps()):
            restored = self._restore(step, *abstract)
            if restored is not None:
                if not self.read_only:
                    self._set_aside(unreadable)
                return (
                    template.replace(**restored["state"]),
                    restored["metric_sums"],
                    dict(restored["position"]),
                )
            unreadable.append(step)
        if unreadable:
            raise CheckpointError(
                f"none of the checkpoints {sorted(unreadable)} in {self.directory} could be read; "
                "remove that directory (or use a new --workdir) to start the run afresh"
            )
        return None

    def _restore(self, step: int, abstract_state, abstract_metrics):
        """The checkpoint of `step`, or None (with a warning) if any process fails to read it."""
        restored, error = None, None
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state),
                    metric_sums=ocp.args.StandardRestore(abstract_metrics),
                    position=ocp.args.JsonRestore(),
                ),
            )
        except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
            error = f"{type(e).__name__}: {e}"
        if _everywhere(error is None):
            return restored
        logging.warning(
            "Skipping unreadable checkpoint %s: %s",
            os.path.join(self.directory, str(step)),
            error or "another process could not read it",
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
