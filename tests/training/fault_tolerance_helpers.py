"""Test hooks for tests/test_fault_tolerance.py, injected through the configs, as a user would add
their own (+callbacks.<name>._target_=..., trainer.plugins=[...])."""

from __future__ import annotations

import errno
import io
import os
import random
import signal
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytorch_lightning as pl
import torch

from zoo.training.checkpoint_io import AtomicCheckpointIO


class RandomWeightNoise(pl.Callback):
    """Before every training step, adds noise drawn from torch's, numpy's and python's RNGs to the
    weights (as dropout draws from torch's): a resumed run ends with the same weights only if
    all three RNG states were restored."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        scale = 1e-3 * random.random() * float(np.random.rand())
        with torch.no_grad():
            for parameter in pl_module.parameters():
                parameter.add_(torch.randn_like(parameter) * scale)


class PoisonWeightsBeforeValidation(pl.Callback):
    """Makes one weight NaN before each validation, after the training loss was checked: the
    checkpoints saved after validation (best, last) would hold non-finite weights."""

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class PausingCheckpointIO(AtomicCheckpointIO):
    """Pauses for ``pause`` seconds halfway through writing any checkpoint whose file already
    exists, so that a test can kill the process while a previous checkpoint is being replaced."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        if not Path(path).exists():
            return super().save_checkpoint(checkpoint, path, storage_options)
        save = torch.save

        def write_half_then_pause(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
            buffer = io.BytesIO()
            save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            file.write(data[: len(data) // 2])
            file.flush()
            time.sleep(self.pause)
            file.write(data[len(data) // 2 :])

        with mock.patch.object(torch, "save", write_half_then_pause):
            return super().save_checkpoint(checkpoint, path, storage_options)


class SigtermDuringValidation(pl.Callback):
    """Sends this process a SIGTERM as the first validation after sanity checking starts."""

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.current_epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class Interrupted(Exception):
    """What StopAfterStep raises: stands for a kill."""


class StopAfterStep(pl.Callback):
    """Stops the run with an exception once training step ``step`` is done, before that step's
    checkpoints are written (Lightning runs checkpoint callbacks last): an in-process kill."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise Interrupted(f"stopped after step {self.step}")


class _FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes, then fails as a full disk does."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


class FullDiskCheckpointIO(AtomicCheckpointIO):
    """Writes the first ``whole`` checkpoints, then runs out of disk space in the middle of
    each later one (after ``room`` bytes), as ``torch.save`` meets a full disk."""

    def __init__(self, whole: int = 1, room: int = 4096) -> None:
        super().__init__()
        self.whole, self.room, self.saves = whole, room, 0

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None):
        self.saves += 1
        if self.saves <= self.whole:
            return super().save_checkpoint(checkpoint, path, storage_options)
        save = torch.save

        def save_until_full(obj: Any, file: Any, *args: Any, **kwargs: Any) -> None:
            save(obj, _FullDisk(file, self.room), *args, **kwargs)

        with mock.patch.object(torch, "save", save_until_full):
            return super().save_checkpoint(checkpoint, path, storage_options)


class NaNWeightsAtStep(pl.Callback):
    """Makes one weight NaN just before training step ``step``: that step's loss and every one
    after it are NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).view(-1)[0] = float("nan")


class HoldStepWhileMarked(pl.Callback):
    """At the start of training step ``step``, creates the file ``marker`` and holds the step
    until it is gone: a test signals the run then, knowing where it is, and removes the file."""

    def __init__(self, step: int, marker: str) -> None:
        self.step, self.marker = step, Path(marker)

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        self.marker.touch()
        deadline = time.monotonic() + 120
        while self.marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
