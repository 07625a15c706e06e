"""A run directory that can't be written is one line, before anything is computed for it.

Hydra creates the run directory and writes ``.hydra/`` into it before the task starts, so a
read-only one would end in Hydra's traceback: ``WritableRunDirectory``, a Hydra callback
(zoo/configs/hydra/default.yaml), checks it first, for train.py and evaluate.py alike.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from zoo.core.errors import ConfigError, exit_on_user_error


def check_writable_dir(folder: Path, key: str = "hydra.run.dir") -> None:
    """Create ``folder`` and write a file in it; ConfigError naming it, why, and the ``key``
    that chooses another, if that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # os.access says yes to root on a read-only mount: only a real write tells.
        with tempfile.TemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write into the run directory {folder}: {err.strerror or type(err).__name__}"
            f"; choose another with {key}=PATH"
        ) from err


class WritableRunDirectory(Callback):
    """Hydra callback: the run (or sweep) directory is checked before Hydra writes into it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_writable_dir(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with exit_on_user_error():
            check_writable_dir(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
