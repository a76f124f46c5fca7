"""A run's workdir: whose it is, its lock, the checks before a run starts (a path of its own, jaxcnn's
layout, writable, room for checkpoints, the same config), and the stored result of a finished run.

A directory is jaxcnn's when a run marked it (`MARKER`, written when a run first takes it, naming the
jaxcnn version), or when it holds the run of an earlier jaxcnn, which wrote no marker: a `config.json`
holding jaxcnn's keys, next to a `checkpoints/` directory or a `result.json`. Any other directory that is
not empty (but for what jaxcnn writes before a run: a lock, experiments/launch_local.py's logs) is
refused unless `config.overwrite`, and even then a run removes only what jaxcnn writes there
(`_discard_run`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import ml_collections

from jaxcnn._files import strict_json, write_atomically
from jaxcnn._version import __version__
from jaxcnn.training.checkpoint import replaceable_bytes, saved_steps, sizes
from jaxcnn.training.config import resumable_keys
from jaxcnn.training.result import RunResult

LENGTH_KEYS = ("num_epochs", "num_steps")  # may grow between segments: the run is extended
LOCK_FILE = ".lock"
MARKER = ".jaxcnn"  # {"jaxcnn": version, "created": time}: this directory is a jaxcnn run's
FILES = ("config.json", "metrics.jsonl", "result.json", MARKER)  # what jaxcnn keeps in a workdir as files
DIRECTORIES = ("checkpoints", "tensorboard", "plots")  # what jaxcnn keeps in a workdir as directories
# The files jaxcnn draws into plots/: experiments/train.py's curves, experiments/visualize.py's pictures.
PLOT_FILES = ("curves.png", "filters.png", "feature_maps.png", "confusion_matrix.png", "misclassified.png")
# What a run writes besides config.json (patterns under the workdir): a discarded run loses these and
# nothing else; a user's own files in tensorboard/ or plots/ stay.
RUN_OUTPUTS = (
    "checkpoints",
    "metrics.jsonl",
    "result.json",
    "tensorboard/events.out.tfevents.*",  # tensorboardX's
    "tensorboard/plugins/profile",  # jax.profiler's (config.profile)
    *(f"plots/{name}" for name in PLOT_FILES),
)
_EARLIER_RUN_KEYS = {"model", "dataset", "batch_size", "seed"}  # in every jaxcnn config.json
# What jaxcnn may write before a run takes a directory: the lock of a run refused before it wrote
# anything, the logs of experiments/launch_local.py's processes (opened as they start).
_BEFORE_A_RUN = {LOCK_FILE, "processes"}


class WorkdirError(RuntimeError):
    """The workdir cannot hold this run."""


class WorkdirLock:
    """An advisory lock (`flock`) on `workdir/.lock`, which records its holder. The kernel releases it
    when the holding process ends, however it ends, so a killed run's lock is free to take."""

    def __init__(self, fd: int, path: Path):
        self._fd: int | None = fd  # None once released
        self.path = path

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


def _read_lock(path: Path) -> str:
    """The lock file's text; a byte that is not UTF-8 (damage) costs only itself."""
    return path.read_bytes().decode("utf-8", errors="replace")


def lock_workdir(workdir: str | os.PathLike) -> WorkdirLock:
    """Locks `workdir` (made if needed) for this process until `release`, or the end of the process.

    Taking over the lock of a run that was killed is logged. The record is written in place (not
    replaced by a rename): the lock belongs to the open file.

    Raises:
      WorkdirError: another process holds the lock (the message names it), or the workdir is not writable.
    """
    workdir = Path(workdir)
    _check_writable(workdir)
    path = workdir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as error:
        raise WorkdirError(
            f"cannot open the lock file {path} ({error.strerror}); move it out of the way or pick another "
            "--workdir"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(_read_lock(path))
        os.close(fd)
        raise WorkdirError(
            f"workdir {workdir} is in use by another run ({holder}); wait for it to end, or pick another "
            "--workdir"
        ) from None
    previous = _read_lock(path)
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


def checked_path(workdir: str | os.PathLike) -> Path:
    """`workdir` as a Path, if a run may take it: not empty, not the root or the home directory (nor a
    link to them).

    Raises:
      WorkdirError: naming the path and what it is.
    """
    if not os.fspath(workdir).strip():
        raise WorkdirError("--workdir is empty; name a directory of the run's own, e.g. runs/lenet5")
    path = Path(workdir)
    resolved = path.resolve()
    what = {Path(resolved.anchor): "the root directory", Path.home().resolve(): "the home directory"}
    if resolved in what:
        link = f" (a link to {resolved})" if resolved != path.absolute() else ""
        raise WorkdirError(
            f"workdir {path}{link} is {what[resolved]}; a run needs a directory of its own, e.g. runs/lenet5"
        )
    return path


def _is_jaxcnn_run(workdir: Path) -> bool:
    """Whether `workdir` is marked, or holds the run of a jaxcnn that wrote no marker."""
    if (workdir / MARKER).exists():
        return True
    try:
        recorded = _json_object(workdir / "config.json")
    except (OSError, ValueError):
        return False
    return _EARLIER_RUN_KEYS <= recorded.keys() and (
        (workdir / "checkpoints").is_dir() or (workdir / "result.json").is_file()
    )


def _foreign_files(workdir: Path) -> list[str]:
    """What a directory that is not a jaxcnn run's holds ([] if it is one, empty, or absent)."""
    if not workdir.is_dir() or _is_jaxcnn_run(workdir):
        return []
    return sorted(path.name for path in workdir.iterdir() if path.name not in _BEFORE_A_RUN)


def _check_layout(workdir: Path) -> None:
    """WorkdirError if a name jaxcnn keeps a file under is a directory, or the reverse."""
    for names, wrong, kept in ((FILES, Path.is_dir, "a file"), (DIRECTORIES, Path.is_file, "a directory")):
        for name in names:
            if wrong(workdir / name):
                raise WorkdirError(
                    f"{workdir / name} is not {kept}, as the run keeps it; move it out of the way, then run "
                    "the same command again"
                )


def claim_workdir(workdir: str | os.PathLike, *, overwrite: bool = False) -> WorkdirLock:
    """Locks `workdir` for this process (`lock_workdir`) and marks it as jaxcnn's (`MARKER`), if a run
    may take it: a new or empty directory, or a jaxcnn run's; with `overwrite`, any directory (the run
    then replaces only what jaxcnn writes). Nothing is written before every check has passed.

    Raises:
      WorkdirError: an empty path, the root or home directory, a directory that is not a jaxcnn run's
        (without `overwrite`; the message lists what it holds), a file where jaxcnn keeps a directory
        or the reverse, a workdir locked by another run, or one that is not writable.
    """
    workdir = checked_path(workdir)
    foreign = _foreign_files(workdir)
    if foreign and not overwrite:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise WorkdirError(
            f"workdir {workdir} is not empty and holds no jaxcnn run ({shown}); pick a new or empty "
            "--workdir, or pass --config.overwrite=True to run there (it replaces only the files jaxcnn "
            "writes)"
        )
    if foreign:
        logging.warning(
            "workdir %s holds files jaxcnn did not write; config.overwrite: the run replaces only its own",
            workdir,
        )
    _check_layout(workdir)
    lock = lock_workdir(workdir)
    if not (workdir / MARKER).exists():
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        try:
            write_file(workdir / MARKER, strict_json({"jaxcnn": __version__, "created": created}) + "\n")
        except WorkdirError:
            lock.release()
            raise
    return lock


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """An error of the file system in the block (a full disk, one turned read-only) as one WorkdirError
    naming `path`."""
    try:
        yield
    except OSError as error:
        raise WorkdirError(
            f"cannot write {path} ({error.strerror or error}); make room or fix the file system, then run "
            "the same command again"
        ) from error


def write_file(path: Path, text: str) -> None:
    """`write_atomically`, its errors as WorkdirError (`writing`)."""
    with writing(path):
        write_atomically(path, text)


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
        free_size, needed_size = sizes(free, needed)
        raise WorkdirError(
            f"workdir {workdir} has {free_size} free, but this run's checkpoints need about "
            f"{needed_size} more ({checkpoints_to_keep} kept and one being written); free some space or pick "
            "another --workdir"
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


def _json_object(path: Path) -> dict:
    """The JSON object in `path`.

    Raises:
      OSError: it cannot be read. ValueError: it is not JSON (or not UTF-8), or not an object.
    """
    value = json.loads(path.read_bytes())
    if not isinstance(value, dict):
        raise ValueError(f"it holds a JSON {type(value).__name__}, not an object")
    return value


def _unreadable(path: Path, error: Exception) -> str:
    """`path` and why it could not be read, for a message."""
    reason = error.strerror if isinstance(error, OSError) else str(error).splitlines()[0]
    return f"{path} cannot be read ({reason})"


def _recorded(workdir: Path) -> dict | None:
    """The flat config `workdir/config.json` records, None if there is none.

    Raises:
      OSError, ValueError: it cannot be read, or holds no JSON object.
    """
    path = workdir / "config.json"
    return _flat(_json_object(path)) if path.exists() else None


def _differences(old: dict, new: dict, ignored: set[str]) -> list[str]:
    keys = sorted((set(old) | set(new)) - ignored)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def _discard_run(workdir: Path) -> None:
    """Removes what jaxcnn wrote of a run (`RUN_OUTPUTS`), nothing else; tensorboard/ and plots/ go if
    that empties them."""
    for pattern in RUN_OUTPUTS:
        for path in workdir.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for directory in ("tensorboard/plugins", "tensorboard", "plots"):
        if (workdir / directory).is_dir() and not any((workdir / directory).iterdir()):
            (workdir / directory).rmdir()


def prepare_workdir(
    workdir: str | os.PathLike,
    config: ml_collections.ConfigDict,
    *,
    checkpoint_bytes: int,
    checkpoints_to_keep: int = 3,
    overwrite: bool = False,
    resumable: set[str] | None = None,
    total_steps: int | None = None,
) -> Path:
    """Makes `workdir` ready for `config` and records the config in `workdir/config.json`.

    A workdir that holds another config's run (keys other than the `resumable` ones, default
    `training.resumable_keys()`, differ), or one whose `config.json` cannot be read, is refused (the
    message lists what differs), unless `overwrite`, or that run left nothing of value (no checkpoint,
    no result: it failed early); either way that run's outputs are discarded first, with a warning. A run
    made longer (`num_epochs` / `num_steps`) loses its `result.json`: it is no longer finished. Every
    check comes before the first change on disk: a refused run changes nothing.

    Raises:
      WorkdirError: not writable, too little free space, a different run's workdir, or one whose newest
        checkpoint is past `total_steps` (a run is made longer, never shorter).
    """
    workdir = Path(workdir)
    _check_writable(workdir)
    new = _flat(json.loads(config.to_json()))
    old, described = _other_run(workdir, new, resumable_keys() if resumable is None else resumable)
    _refuse_unless_continued(workdir, described, overwrite, total_steps)
    _check_free_space(workdir, checkpoint_bytes, checkpoints_to_keep)
    if described is not None:
        reason = "config.overwrite" if overwrite else "it saved no checkpoint and no result"
        logging.warning("%s: discarding it (%s) and its record", described, reason)
        _discard_run(workdir)
    elif old is not None and any(old.get(key) != new.get(key) for key in LENGTH_KEYS):
        if (workdir / "result.json").exists():
            logging.warning("%s: the run's length changed; its result.json is removed until it ends", workdir)
        (workdir / "result.json").unlink(missing_ok=True)
    write_file(workdir / "config.json", json.dumps(json.loads(config.to_json()), indent=2) + "\n")
    return workdir


def _other_run(workdir: Path, new: dict, resumable: set[str]) -> tuple[dict | None, str | None]:
    """The flat config recorded in `workdir` (None: none, or unreadable) and why the run there is not the
    run of the flat config `new` (None: it is, or there is none)."""
    try:
        old = _recorded(workdir)
    except (OSError, ValueError) as error:
        return None, f"workdir {workdir}: {_unreadable(workdir / 'config.json', error)}"
    differences = [] if old is None else _differences(old, new, resumable)
    if differences:
        return old, f"workdir {workdir} holds a run with another config ({'; '.join(differences)})"
    return old, None


def _refuse_unless_continued(
    workdir: Path, described: str | None, overwrite: bool, total_steps: int | None
) -> None:
    """Refuses (WorkdirError) another run's workdir that holds something of value (a checkpoint, a
    result) unless `overwrite`, and this run's when it was saved past `total_steps`."""
    saved = saved_steps(workdir / "checkpoints")
    if described is not None:
        if (saved or (workdir / "result.json").exists()) and not overwrite:
            raise WorkdirError(
                f"{described}. Use a new --workdir, or pass --config.overwrite=True to discard that run"
            )
    elif total_steps is not None and saved and saved[-1] > total_steps:
        raise WorkdirError(
            f"{workdir} holds this run at step {saved[-1]}, past the {total_steps} steps configured now; "
            "a run can be made longer, not shorter"
        )


def finished_result(workdir: str | os.PathLike, config: ml_collections.ConfigDict) -> RunResult | None:
    """The stored result (`result.json`) of `workdir`'s run, if that run is `config`'s (keys that may
    change on resume aside, but for the run's length) and finished (its final checkpoint is there); else
    None. Reads only: a damaged `result.json` is reported, and the run's result rebuilt from its final
    checkpoint.

    Raises:
      WorkdirError: a path no run may take (`checked_path`), or a file of jaxcnn's that is a directory
        (or the reverse).
    """
    workdir = checked_path(workdir)
    result = workdir / "result.json"
    if not workdir.is_dir() or not _is_jaxcnn_run(workdir):
        return None
    _check_layout(workdir)
    try:
        old = _recorded(workdir)
    except (OSError, ValueError):
        return None  # prepare_workdir says why
    ignored = resumable_keys() - set(LENGTH_KEYS)
    if old is None or not result.exists() or _differences(old, _flat(json.loads(config.to_json())), ignored):
        return None
    try:
        stored = RunResult.from_dict(_json_object(result))
    except (OSError, ValueError, TypeError) as error:
        logging.warning(
            "%s; the result is computed again from the final checkpoint", _unreadable(result, error)
        )
        return None
    return stored if stored.steps in saved_steps(workdir / "checkpoints") else None
