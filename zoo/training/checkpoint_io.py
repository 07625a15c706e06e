"""Checkpoint writes that a kill can't truncate.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which stages the file in
$TMPDIR and then moves it into place: across filesystems the move is a copy, and a kill during
it leaves a truncated last.ckpt; on one filesystem, a kill leaves the staged file behind. Here
the checkpoint is written to a temporary file beside its target, fsynced and renamed over it:
the target is always either the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH

log = logging.getLogger(__name__)

# ".last.ckpt.<hex>.tmp": hidden, and not "*.ckpt", so that nothing looking for checkpoints
# (ModelCheckpoint's version counter, ckpt_path globs) ever picks one up.
TEMP_GLOB = ".*.ckpt.*.tmp"


def is_local(path: _PATH) -> bool:
    return get_protocol(str(path)) == "file"


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def remove_stale_temp_files(directory: _PATH) -> list[Path]:
    """Delete the temporary files that saves killed in a previous run left in ``directory``."""
    if not is_local(directory) or not Path(directory).is_dir():
        return []
    stale = sorted(Path(directory).glob(TEMP_GLOB))
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info(f"removed {path}, left by a checkpoint save that was interrupted")
    return stale


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable: it lives in the directory's entries."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves go to a temp file beside the target, fsync, rename.

    Remote paths (s3://, ...) are left to Lightning, whose object-store writes are atomic.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None
    ) -> None:
        if not is_local(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(target)
        # O_EXCL: never write through someone else's file; 0o666 & ~umask like open().
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        _fsync_directory(target.parent)
