"""One line per validation epoch, for runs nobody watches live: its epoch, step and validation
metrics, in the run's log file always, and on stdout when stdout is not a terminal (a log file,
a SLURM job, ``nohup``), where Lightning's progress bar draws nothing between the model summary
and the end."""

from __future__ import annotations

import sys
from collections.abc import Mapping

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from zoo.core.logs import write_to_log_files


def epoch_line(epoch: int, max_epochs: int | None, step: int, metrics: Mapping[str, object]) -> str:
    """``epoch 3/15  step 1290  val/acc 0.9912  val/loss 0.0301``: the ``val/`` metrics, sorted."""
    shown = [
        f"{name} {float(value):.4f}"
        for name, value in sorted(metrics.items())
        if name.startswith("val/") and isinstance(value, torch.Tensor | int | float)
    ]
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return "  ".join([f"epoch {epoch}{total}", f"step {step}", *shown])


class EpochLog(Callback):
    """Writes :func:`epoch_line` at the end of each validation (not the sanity check), from
    rank 0."""

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        line = epoch_line(
            trainer.current_epoch, trainer.max_epochs, trainer.global_step, trainer.callback_metrics
        )
        write_to_log_files(line, __name__)
        if not sys.stdout.isatty():
            print(line, flush=True)
