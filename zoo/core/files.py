"""File helpers every layer shares."""

from __future__ import annotations

import hashlib
import json
import math
import stat
from pathlib import Path
from typing import Any, Literal


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path`` by ``algorithm`` ("sha256", "md5"), read in 1 MiB chunks so that
    a weights file of hundreds of MB is never held in memory whole."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def path_problem(path: Path, wanted: Literal["file", "folder"]) -> str | None:
    """What keeps ``path`` from being the ``wanted`` kind, as words that follow it in a sentence
    ("does not exist", "is a directory, not a file", "is a file, not a folder", "is not a
    regular file (a FIFO, a socket or a device)"), or None where it is one. Nothing is opened:
    opening a FIFO waits for a writer that may never come."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "does not exist"  # a dangling link too
    except OSError as err:  # a link that loops, a folder that can't be entered
        return f"cannot be read ({err.strerror or type(err).__name__})"
    if wanted == "folder":
        if stat.S_ISDIR(mode):
            return None
        return "is a file, not a folder" if stat.S_ISREG(mode) else "is not a folder"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    return "is not a regular file (a FIFO, a socket or a device)"


def finite_or_null(value: Any) -> Any:
    """``value`` with every NaN or infinite float in it, however nested in mappings, lists and
    tuples, replaced by None: JSON has no such numbers, and Python's ``json`` would write
    ``NaN`` or ``Infinity``, which other readers refuse."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON at ``path``, every value valid JSON (:func:`finite_or_null`)."""
    path.write_text(json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n")
