"""The one seam to Lightning's private API: every attribute of Lightning's whose name starts with
an underscore, or that lives in its loops' internals, is read here and nowhere else in the zoo.

Lightning may change these in any minor release, hence pyproject's ``pytorch-lightning<2.7``.
tests/core/test_lightning.py checks each of them on real Lightning objects, naming whatever the
installed version lacks, and checks what the functions below return.

- :func:`should_update_logs`: whether the loggers write at this step (Lightning's own test);
- :func:`batches_processed_this_epoch`: the training loop's position, as a resume counts it;
- :func:`attached_trainer`: a module's Trainer, or None (``module.trainer`` raises without one);
- :func:`summary_data`: a model summary's table, column by column;
- :class:`ThroughputMonitorBase` and :class:`RichModelSummaryBase`: Lightning's callbacks, with
  the private hooks and state that the zoo's subclasses override or read under public names.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichModelSummary, ThroughputMonitor
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.model_summary import ModelSummary as Summary


def should_update_logs(trainer: pl.Trainer) -> bool:
    """Whether the loggers write at the end of this training step: every
    ``trainer.log_every_n_steps`` steps, and when the trainer is stopping. The test Lightning's
    LearningRateMonitor and ThroughputMonitor use."""
    return bool(trainer._logger_connector.should_update_logs)


def batches_processed_this_epoch(trainer: pl.Trainer) -> int:
    """Training batches finished in the current epoch (restored with a checkpoint), the count
    Lightning skips ahead by when it resumes mid-epoch."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The Trainer running ``module``, or None for a module called on its own (where
    ``module.trainer`` raises)."""
    return module._trainer


def summary_data(summary: Summary) -> list[tuple[str, list[str]]]:
    """The summary's table as (column title, one cell per layer) pairs, as Lightning prints it."""
    return summary._get_summary_data()


class ThroughputMonitorBase(ThroughputMonitor):
    """Lightning's ThroughputMonitor, whose per-batch hooks and counters a subclass reaches by
    public names.

    Lightning calls its private ``_start`` when a stage's loop starts and ``_update`` after each
    batch; here they call :meth:`start_stage` and :meth:`count_batch`, which a subclass
    overrides (``super()`` runs Lightning's). :meth:`add_batch` and :meth:`add_sample` update
    the per-stage counts and throughput that Lightning keeps.
    """

    def _start(self, trainer: pl.Trainer) -> None:
        self.start_stage(trainer)

    def _update(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, iter_num: int
    ) -> None:
        self.count_batch(trainer, pl_module, batch, iter_num)

    def start_stage(self, trainer: pl.Trainer) -> None:
        """Lightning's: reset the stage's counts (when fitting, or at its first start) and
        start its clock."""
        super()._start(trainer)

    def count_batch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, iter_num: int
    ) -> None:
        """Lightning's: wait for the GPU, count the batch and add a sample, after every batch."""
        super()._update(trainer, pl_module, batch, iter_num)

    def add_batch(self, stage: RunningStage, samples: int) -> None:
        """Count one batch of ``samples`` toward the stage's totals."""
        self._samples[stage] += samples
        self._batches[stage] += 1

    def add_sample(self, stage: RunningStage, flops: int | None) -> None:
        """Add a throughput sample of ``stage``: the time since its clock started, its batches
        and samples so far, and ``flops`` (the work since the previous sample, or None)."""
        self._throughputs[stage].update(
            time=time.perf_counter() - self._t0s[stage],
            batches=self._batches[stage],
            samples=self._samples[stage],
            flops=flops,
        )


class RichModelSummaryBase(RichModelSummary):
    """Lightning's RichModelSummary, with what its ``on_fit_start`` uses under public names, for
    a subclass that changes the table before it is printed."""

    @property
    def max_depth(self) -> int:
        """The layer nesting the table goes down to; 0 prints no summary."""
        return self._max_depth

    def layer_summary(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Summary:
        """The summary of ``pl_module`` that Lightning would print, to ``max_depth``."""
        return self._summary(trainer, pl_module)

    def print_summary(
        self,
        summary: Summary,
        data: list[tuple[str, list[str]]],
        total_flops: int,
    ) -> None:
        """Print ``data`` (as :func:`summary_data` gives it) with ``summary``'s totals, styled by
        the callback's own arguments."""
        self.summarize(
            data,
            summary.total_parameters,
            summary.trainable_parameters,
            summary.model_size,
            summary.total_training_modes,
            total_flops=total_flops,
            **self._summarize_kwargs,
        )
