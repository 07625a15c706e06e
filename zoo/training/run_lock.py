"""One writer per run directory: a second ``train.py`` on a directory in use (a job resubmitted
with ``ckpt_path=last`` while it still runs, two sweeps on one ``hydra.run.dir``) stops before
it writes anything, naming the process that holds it.

The lock is filelock's ``flock`` on ``<run dir>/.train.lock``, which the kernel releases when its
holder ends, however it ends (a SIGKILL leaves no stale lock). The file's text, the holder's pid,
host and start time, is only what the message quotes.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from zoo.core.errors import ZooError

LOCK_NAME = ".train.lock"


class RunDirectoryInUse(ZooError):
    """Another process trains into this run directory."""


def _write_holder(fd: int) -> None:
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {started}\n".encode())


@contextmanager
def single_writer(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` for this process, or raise RunDirectoryInUse naming its holder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    lock = FileLock(path, timeout=0, on_acquired=_write_holder)
    try:
        lock.acquire()
    except Timeout:
        try:
            holder = path.read_text().strip() or "another process"
        except OSError:
            holder = "another process"
        raise RunDirectoryInUse(
            f"{run_dir} is in use by another train.py ({holder}): wait for it to end, or "
            "train into another directory (hydra.run.dir=...)"
        ) from None
    try:
        yield
    finally:
        lock.release()
