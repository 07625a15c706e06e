"""Checkpoint writes that a kill can't truncate.

Lightning's TorchCheckpointIO saves through an fsspec transaction, which stages the file in
$TMPDIR and then moves it into place: across filesystems the move is a copy, and a kill during
it leaves a truncated last.ckpt; on one filesystem, a kill leaves the staged file behind. Here
the checkpoint is written to a temporary file beside its target, fsynced and renamed over it:
the target is always either the previous checkpoint or the new one, whole.

A save that runs out of disk space stops the run with one line naming the file and the last
checkpoint that was written whole (``DiskFullError``), its temporary file removed. A save under
way holds an exclusive ``flock`` on its temporary file, so that the clean-up of the files a
killed save left behind never deletes one that is still being written.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from fsspec.utils import get_protocol
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from zoo.core.errors import ZooError

# What Lightning hands a CheckpointIO as a path (its own alias for it is private).
PathLike = str | os.PathLike

log = logging.getLogger(__name__)

# What a full disk or an exhausted quota report; torch.save turns them into "unexpected pos"
# RuntimeErrors, with the OSError only in the exception's context.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(ZooError):
    """A checkpoint could not be written for lack of space (its temporary file is removed)."""


# ".last.ckpt.<hex>.tmp": hidden, and not "*.ckpt", so that nothing looking for checkpoints
# (ModelCheckpoint's version counter, ckpt_path globs) ever picks one up.
TEMP_GLOB = ".*.ckpt.*.tmp"


def is_local(path: PathLike) -> bool:
    return get_protocol(str(path)) == "file"


def temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def _being_written(path: Path) -> bool:
    """Whether a save holds the lock on ``path`` (fcntl: no library locks a file in place)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock, if this took it
    return False


def remove_stale_temp_files(directory: PathLike) -> list[Path]:
    """Delete the temporary files that killed saves left in ``directory``; a save still under
    way (in this process or another) keeps its file."""
    if not is_local(directory) or not Path(directory).is_dir():
        return []
    stale = [p for p in sorted(Path(directory).glob(TEMP_GLOB)) if not _being_written(p)]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            log.info(f"removed {path}, left by a checkpoint save that was interrupted")
    return stale


def _is_disk_full(err: BaseException) -> bool:
    """``err`` or any exception it was raised from or during is a full disk."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


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

    def __init__(self) -> None:
        super().__init__()
        # The latest save of this run that completed, named when a later one finds no space.
        self.last_whole: Path | None = None

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: PathLike, storage_options: Any | None = None
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
                # Held until the file is closed (renamed by then): remove_stale_temp_files
                # leaves a locked file alone.
                fcntl.flock(file.fileno(), fcntl.LOCK_EX)
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
                os.replace(temp, target)
        except BaseException as err:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            if isinstance(err, Exception) and _is_disk_full(err):
                raise self._disk_full(target) from err
            raise
        _fsync_directory(target.parent)
        self.last_whole = target

    def _disk_full(self, target: Path) -> DiskFullError:
        if self.last_whole is not None and self.last_whole.exists():
            last = f"the last whole checkpoint is {self.last_whole}"
        elif target.exists():
            last = f"{target} still holds the previous checkpoint, whole"
        else:
            last = "no checkpoint of this run was written whole"
        return DiskFullError(
            f"no space left on device while writing {target} (nothing half-written is left "
            f"behind); {last}: free some space, then resume with ckpt_path=last"
        )
