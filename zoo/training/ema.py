"""An exponential moving average of the weights: Lightning's EMAWeightAveraging, evaluated on the
average after training too."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn


class EMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging (callbacks=ema), with one change: only ``fit`` restores the
    raw weights of a checkpoint.

    Its checkpoints hold the average as ``state_dict`` and the raw weights as
    ``current_model_state``. Lightning 2.6.6 loads ``current_model_state`` back into the module
    whenever the callback has an average, which after ``fit`` includes ``trainer.test(ckpt_path=
    best)``: the test would score the raw weights of the checkpoint chosen for its average. Here
    test, validate and predict keep the average Lightning loaded from ``state_dict`` (as
    evaluate.py does); resuming a fit still restores both, exactly.
    """

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
