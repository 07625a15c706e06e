"""Test hooks for tests/training/test_ddp.py, injected as +callbacks.<name>._target_=..."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class RecordTestBatches(pl.Callback):
    """Each rank writes the sizes of the test batches it evaluated to <directory>/rank<N>.json."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)
        self.sizes: list[int] = []

    def on_test_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
        batch_idx: int, dataloader_idx: int = 0,
    ) -> None:  # fmt: skip
        self.sizes.append(len(batch[1]))

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.sizes))
