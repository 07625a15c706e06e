"""A NaN or infinite loss stops the run, naming the step; non-finite weights are never saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from zoo.core.errors import ZooError


class NonFiniteError(ZooError, RuntimeError):
    """The training loss or the weights became NaN or infinite: the run's settings' doing
    (learning rate, no clipping), not a bug."""


class FiniteGuard(Callback):
    """Stops training at the first NaN or infinite loss with a message naming the step, and
    refuses to save non-finite weights, as "best" or at all."""

    def __init__(self) -> None:
        self._step = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The step this batch is logged at (global_step grows with the optimizer step).
        self._step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        local = not bool(torch.isfinite(loss.detach()).all())
        # Every rank stops together, or the others would wait for it forever.
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            value = f" ({loss.item()})" if local else " (on another rank)"
            raise NonFiniteError(
                f"the training loss is not finite{value} at step {self._step} (epoch "
                f"{trainer.current_epoch}, batch {batch_idx}): training stopped, and nothing "
                "from this step was saved. Lower optimizer.lr or clip gradients "
                "(trainer.gradient_clip_val=1.0)"
            )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [
            name
            for name, tensor in checkpoint["state_dict"].items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
        if bad:
            raise NonFiniteError(
                f"{len(bad)} weight tensor(s) ({', '.join(bad[:3])}) are NaN or infinite at "
                f"step {trainer.global_step}: refusing to save them as a checkpoint"
            )
