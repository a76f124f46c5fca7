"""Checks a workdir before a run starts: writable, room for checkpoints, and the same config."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import ml_collections

# Keys that change what is logged or kept, not the run itself: they may differ on resume.
RESUMABLE_CHANGES = frozenset(
    {
        "log_every",
        "eval_every",
        "checkpoint_every",
        "checkpoints_to_keep",
        "data_dir",
        "data_source",
        "overwrite",
    }
)


class WorkdirError(RuntimeError):
    """The workdir cannot hold this run."""


def _check_writable(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise WorkdirError(
            f"workdir {workdir} is not writable ({error.strerror or error}); pick another --workdir"
        ) from error


def _check_free_space(workdir: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(workdir).free
    if free < needed_bytes:
        raise WorkdirError(
            f"workdir {workdir} has {free / 2**20:.0f} MiB free, but this run's checkpoints need about "
            f"{needed_bytes / 2**20:.0f} MiB; free some space or pick another --workdir"
        )


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted((set(old) | set(new)) - RESUMABLE_CHANGES)
    return [f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in keys if old.get(key) != new.get(key)]


def prepare_workdir(
    workdir: str | os.PathLike, config: ml_collections.ConfigDict, checkpoint_bytes: int
) -> Path:
    """Makes `workdir` ready for `config` and records the config in `workdir/config.json`.

    A workdir that holds another config's run is refused (the message lists what differs),
    unless `config.overwrite`, which removes that run's checkpoints and metrics first.

    Raises:
      WorkdirError: not writable, too little free space, or a different run's workdir.
    """
    workdir = Path(workdir)
    _check_writable(workdir)
    recorded = workdir / "config.json"
    new = json.loads(config.to_json())
    if recorded.exists():
        differences = _differences(json.loads(recorded.read_text()), new)
        if differences and not config.overwrite:
            raise WorkdirError(
                f"workdir {workdir} holds a run with another config ({'; '.join(differences)}). "
                "Use a new --workdir, or pass --config.overwrite=True to discard that run"
            )
        if differences:
            shutil.rmtree(workdir / "checkpoints", ignore_errors=True)
            (workdir / "metrics.jsonl").unlink(missing_ok=True)
    _check_free_space(workdir, checkpoint_bytes * (config.checkpoints_to_keep + 1))
    temporary = recorded.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(new, indent=2) + "\n")
    os.replace(temporary, recorded)
    return workdir
