"""Callbacks the configs refer to by class path: images per second, and the progress bar."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.trainer.states import RunningStage, TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from zoo.core.lightning import ThroughputMonitorBase, should_update_logs


def images_in_batch(batch: Any) -> int:
    """Batches are (images, targets) tuples; the first dimension counts images."""
    return len(batch[0])


class ImagesPerSecond(ThroughputMonitorBase):
    """Lightning's ThroughputMonitor, told how to count images, that reads the clock only at
    the training steps it logs at (every ``trainer.log_every_n_steps``).

    Lightning's waits for the GPU (``torch.cuda.synchronize``) and samples the clock after
    every batch, though it logs only every log_every_n_steps: a host sync per step. Here the
    other batches are only counted, so the rates logged are over whole logging intervals:
    ``window_size`` samples span ``window_size - 1`` of them (one more sample is taken where
    validation interrupts training). Validation batches (few) are timed as Lightning times
    them.
    """

    def __init__(self, window_size: int = 2, separator: str = "/") -> None:
        super().__init__(
            batch_size_fn=images_in_batch, window_size=window_size, separator=separator
        )
        self._untimed: dict[RunningStage, int] = {}

    def start_stage(self, trainer: pl.Trainer) -> None:
        super().start_stage(trainer)
        if trainer.state.stage is not None:
            self._untimed[trainer.state.stage] = 0

    def count_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, iter_num: int
    ) -> None:
        # Lightning's, but for the clock and the sync only where it logs. (No length_fn: the
        # zoo's batches are images.)
        stage = trainer.state.stage
        assert stage is not None
        self.add_batch(stage, self.batch_size_fn(batch))
        self._untimed[stage] = self._untimed.get(stage, 0) + 1
        if stage != RunningStage.TRAINING or should_update_logs(trainer):
            self._time(trainer, pl_module, stage)

    @rank_zero_only
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The training batches since the last logging step end here: timed now, or Lightning's
        # on_validation_end would take their time for the pause before validation.
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and self._untimed.get(RunningStage.TRAINING):
            self._time(trainer, pl_module, RunningStage.TRAINING)
        super().on_validation_start(trainer, pl_module)

    def _time(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: RunningStage
    ) -> None:
        """Read the clock (after the GPU's queue) and add a sample of ``stage``."""
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        flops = getattr(pl_module, "flops_per_batch", None)
        # What ran since the last sample, on this device.
        self.add_sample(stage, None if flops is None else flops * self._untimed[stage])
        self._untimed[stage] = 0


class ProgressBar(RichProgressBar):
    """Lightning's RichProgressBar, whose training bar and metrics follow at most
    ``refresh_rate`` times a second, the rate the display redraws at.

    Lightning 2.6's reads every progress-bar metric on the host (``.item()``, a GPU sync) and
    updates the bar after every training batch, and redraws 100 times a second by default.
    """

    def __init__(self, refresh_rate: int = 10, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._updated = float("-inf")

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        last = batch_idx + 1 >= self.total_train_batches
        if self.is_enabled and not last and now - self._updated < 1 / self.refresh_rate:
            return
        self._updated = now
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
