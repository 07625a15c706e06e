"""What evaluate.py writes (metrics.json, predictions.json, figures, model.onnx, visualisations,
logs) goes into its run directory; a write that can't happen is one line naming the path.

The run directory is checked before the checkpoint is read, so that a read-only directory fails
at once rather than after the evaluation; a failure later (a name taken by a directory, a full
disk) is caught where the OSError names a path inside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zoo.core.errors import ConfigError
from zoo.core.run_dir import check_writable_dir

_HINT = "choose another run directory with hydra.run.dir=PATH"


def prepare_output_dir(output_dir: Path) -> None:
    """Create ``output_dir`` and check that a file can be written in it; ConfigError if not.
    (From the command line, zoo.core.run_dir's Hydra callback has checked it already.)"""
    check_writable_dir(output_dir)


def check_output_file(path: Path, what: str) -> None:
    """ConfigError if ``path`` can't be written as a file because a directory holds its name."""
    if path.is_dir():
        raise ConfigError(
            f"cannot write {what} to {path}: a directory has that name; move it away or {_HINT}"
        )


@contextmanager
def output_errors(output_dir: Path) -> Iterator[None]:
    """An OSError about a path inside ``output_dir`` (a failed write of an output) becomes one
    ConfigError line naming it; any other error passes on unchanged."""
    try:
        yield
    except OSError as err:
        name = err.filename
        if name is None or not _inside(Path(os.fsdecode(name)), output_dir):
            raise
        raise ConfigError(f"cannot write {os.fsdecode(name)}: {_reason(err)}; {_HINT}") from err


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__
