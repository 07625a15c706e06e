"""Callbacks the GPU tests inject into train.py runs (+callbacks.<name>._target_=...).

They import nothing from tests.conftest, whose import sets torch's thread count: in a train.py
subprocess that would change the CPU's sums, and so a resumed run's bits.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytorch_lightning as pl


class SlowSteps(pl.Callback):
    """Sleeps after each training step: on a GPU the fault-tolerance recipe would otherwise be
    over before a test could kill it mid-epoch."""

    def __init__(self, seconds: float = 0.05) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(self.seconds)


class RecordDataDevices(pl.Callback):
    """Records, at each training step, the device of the datamodule's training split and that
    of the batch the step receives."""

    seen: ClassVar[list[tuple[str, str]]] = []

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        split = trainer.datamodule.splits["train"].tensors[0]
        RecordDataDevices.seen.append((split.device.type, batch[0].device.type))
