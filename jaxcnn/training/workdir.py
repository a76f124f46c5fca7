"""A run's workdir: its lock, the checks before a run starts (writable, room for checkpoints, the same
config), and the stored result of a finished run."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import ml_collections

from jaxcnn.training.checkpoint import replaceable_bytes, saved_steps, sizes
from jaxcnn.training.config import resumable_keys

LENGTH_KEYS = ("num_epochs", "num_steps")  # may grow between segments: the run is extended
LOCK_FILE = ".lock"
# What a run writes besides config.json; a discarded run loses all of it.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "result.json", "tensorboard", "plots")


class WorkdirError(RuntimeError):
    """The workdir cannot hold this run."""


class WorkdirLock:
    """An advisory lock (`flock`) on `workdir/.lock`, which records its holder. The kernel releases it
    when the holding process ends, however it ends, so a killed run's lock is free to take."""

    def __init__(self, fd: int, path: Path):
        self._fd, self.path = fd, path

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty file: released, not left behind by a killed run
        os.close(self._fd)  # closing releases the flock
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _holder(text: str) -> str:
    """A lock file's record for a person: pid, host, start time and command."""
    try:
        record = json.loads(text)
        return f"pid {record['pid']} on {record['host']}, started {record['started']}: {record['command']}"
    except (json.JSONDecodeError, TypeError, KeyError):
        return "another process"


def lock_workdir(workdir: str | os.PathLike) -> WorkdirLock:
    """Locks `workdir` (made if needed) for this process until `release`, or the end of the process.

    Taking over the lock of a run that was killed is logged.

    Raises:
      WorkdirError: another process holds the lock (the message names it), or the workdir is not writable.
    """
    workdir = Path(workdir)
    _check_writable(workdir)
    path = workdir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise WorkdirError(
            f"cannot open the lock file {path} ({error.strerror}); pick another --workdir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(path.read_text())
        os.close(fd)
        raise WorkdirError(
            f"workdir {workdir} is in use by another run ({holder}); wait for it to end, or pick another "
            "--workdir"
        ) from None
    previous = path.read_text()
    if previous:
        logging.warning(
            "workdir %s: taking over the lock of a run that was stopped (%s)", workdir, _holder(previous)
        )
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    return WorkdirLock(fd, path)


def _check_writable(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise WorkdirError(
            f"workdir {workdir} is not writable ({error.strerror or error}); pick another --workdir"
        ) from error


def _check_free_space(workdir: Path, checkpoint_bytes: int, checkpoints_to_keep: int) -> None:
    """Room for the checkpoints this run keeps and the one it writes, less what those it replaces
    (and the older ones it rotates out) take now; at least one checkpoint's worth."""
    checkpoints = (checkpoints_to_keep + 1) * checkpoint_bytes
    needed = max(checkpoint_bytes, checkpoints - replaceable_bytes(workdir / "checkpoints"))
    free = shutil.disk_usage(workdir).free
    if free < needed:
        free, needed = sizes(free, needed)
        raise WorkdirError(
            f"workdir {workdir} has {free} free, but this run's checkpoints need about {needed} more "
            f"({checkpoints_to_keep} kept and one being written); free some space or pick another --workdir"
        )


def _flat(tree: dict, prefix: str = "") -> dict:
    """{"eval": {"every": 0}} -> {"eval.every": 0}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _recorded(workdir: Path) -> dict | None:
    path = workdir / "config.json"
    return _flat(json.loads(path.read_text())) if path.exists() else None


def _differences(old: dict, new: dict, ignored: set[str]) -> list[str]:
    keys = sorted((set(old) | set(new)) - ignored)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _discard_run(workdir: Path) -> None:
    for name in RUN_OUTPUTS:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def prepare_workdir(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    *,
    checkpoint_bytes: int,
    checkpoints_to_keep: int = 3,
    overwrite: bool = False,
    resumable: set[str] | None = None,
) -> Path:
    """Makes `workdir` ready for `config` and records the config in `workdir/config.json`.

    A workdir that holds another config's run (keys other than the `resumable` ones, default
    `training.resumable_keys()`, differ) is refused
    (the message lists what differs), unless `overwrite`, or that run left nothing of value (no
    checkpoint, no result: it failed early); either way that run's outputs are discarded first, with a
    warning. A run made longer (`num_epochs` / `num_steps`) loses its `result.json`: it is no longer finished.

    Raises:
      WorkdirError: not writable, too little free space, or a different run's workdir.
    """
    workdir = Path(workdir)
    _check_writable(workdir)
    old, new = _recorded(workdir), _flat(json.loads(config.to_json()))
    resumable = resumable_keys() if resumable is None else resumable
    differences = [] if old is None else _differences(old, new, resumable)
    if differences:
        described = f"workdir {workdir} holds a run with another config ({'; '.join(differences)})"
        valuable = saved_steps(workdir / "checkpoints") or (workdir / "result.json").exists()
        if valuable and not overwrite:
            raise WorkdirError(
                f"{described}. Use a new --workdir, or pass --config.overwrite=True to discard that run"
            )
        reason = "config.overwrite" if overwrite else "it saved no checkpoint and no result"
        logging.warning("%s: discarding it (%s) and its record", described, reason)
        _discard_run(workdir)
    elif old is not None and any(old.get(key) != new.get(key) for key in LENGTH_KEYS):
        if (workdir / "result.json").exists():
            logging.warning("%s: the run's length changed; its result.json is removed until it ends", workdir)
        (workdir / "result.json").unlink(missing_ok=True)
    _check_free_space(workdir, checkpoint_bytes, checkpoints_to_keep)
    recorded = workdir / "config.json"
    temporary = recorded.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(json.loads(config.to_json()), indent=2) + "\n")
    os.replace(temporary, recorded)
    return workdir


def finished_result(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> dict | None:
    """The stored result (`result.json`) of `workdir`'s run, if that run is `config`'s, unchanged but for
    `overwrite`, and finished (its final checkpoint is there); else None. Reads only."""
    workdir = Path(workdir)
    result = workdir / "result.json"
    old = _recorded(workdir)
    if (
        old is None
        or not result.exists()
        or _differences(old, _flat(json.loads(config.to_json())), {"overwrite"})
    ):
        return None
    try:
        stored = json.loads(result.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        logging.warning("%s is unreadable (%s); the result is computed again", result, error)
        return None
    finished = isinstance(stored, dict) and stored.get("steps") in saved_steps(workdir / "checkpoints")
    return stored if finished else None
