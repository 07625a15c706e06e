"""File helpers every layer shares."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path`` by ``algorithm`` ("sha256", "md5"), read in 1 MiB chunks so that
    a weights file of hundreds of MB is never held in memory whole."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
