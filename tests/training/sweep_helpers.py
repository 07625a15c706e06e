"""Test hooks for tests/training/test_sweep.py, injected through the configs
(+callbacks.<name>._target_=...)."""

from __future__ import annotations

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig


class FailJob(pl.Callback):
    """Fails job number ``num`` of a multirun as training starts: a trial that crashes."""

    def __init__(self, num: int) -> None:
        self.num = num

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if HydraConfig.get().job.num == self.num:
            raise RuntimeError(f"job {self.num} crashed, as the test asked")
