"""Files that a crash or another user cannot leave half-written: `write_atomically` and strict JSON.

A file is written to a fresh temporary name in its own directory (made by `tempfile`, so nobody can plant
a symlink there in advance), flushed to disk, then renamed over the target: a reader sees the old file or
the new one, never a part, and a power loss leaves no 0-byte file that would stop every rerun.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path


def write_atomically(path: str | os.PathLike, data: str | bytes | bytearray, *, durable: bool = True) -> None:
    """Replaces `path` by `data` (text is written as UTF-8) in one rename.

    `durable` fsyncs the file before the rename and the directory after it, so the new content survives a
    power loss; a file that is cheap to lose may skip that.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if durable:
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def finite_or_none(tree):
    """`tree` with every NaN or infinite float replaced by None: JSON has no NaN, and strict readers refuse
    the `NaN` that Python's `json` writes."""
    if isinstance(tree, float):
        return tree if math.isfinite(tree) else None
    if isinstance(tree, dict):
        return {key: finite_or_none(value) for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [finite_or_none(value) for value in tree]
    return tree


def strict_json(tree, **kwargs) -> str:
    """`json.dumps` of `tree` with non-finite floats as `null` (never `NaN`/`Infinity`)."""
    return json.dumps(finite_or_none(tree), allow_nan=False, **kwargs)
