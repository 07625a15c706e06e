"""Callbacks the subprocess tests inject with +callbacks.<name>._target_=tests.helpers.<Class>."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch


class SaveWeightsPerRank(pl.Callback):
    """Each DDP rank writes its final weights to <directory>/rank<N>.pt."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        torch.save(pl_module.state_dict(), self.directory / f"rank{trainer.global_rank}.pt")
