"""A NaN or infinite loss stops the run, naming the step; non-finite weights are never saved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from zoo.core.errors import ZooError
from zoo.core.lightning import should_update_logs


class NonFiniteError(ZooError, RuntimeError):
    """The training loss or the weights became NaN or infinite: the run's settings' doing
    (learning rate, no clipping), not a bug."""


class FiniteGuard(Callback):
    """Stops training at the first NaN or infinite loss with a message naming its step, and
    refuses to save non-finite weights, as "best" or at all.

    Reading a loss on the host makes a GPU wait for it: the losses are kept on the device and
    read together at the steps the loggers write (which read them anyway), at least every
    ``trainer.log_every_n_steps`` steps, before validation, at every epoch's end and before every
    save. A loss gone non-finite stops the run within that many steps, named by its own step,
    and no checkpoint is written after it.
    """

    def __init__(self) -> None:
        self._losses: list[torch.Tensor] = []
        # (global step, epoch, batch index) of each loss in _losses.
        self._where: list[tuple[int, int, int]] = []
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
        self._losses.append(loss.detach())
        self._where.append((self._step, trainer.current_epoch, batch_idx))
        if should_update_logs(trainer) or len(self._losses) >= max(1, trainer.log_every_n_steps):
            self.check(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self.check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.check(trainer)

    def check(self, trainer: pl.Trainer) -> None:
        """Raise NonFiniteError, on every rank, if a loss since the last check was not finite
        on any of them. Every rank calls it at the same points (the counts of losses agree)."""
        if not self._losses:
            return
        losses, where = torch.stack(self._losses), self._where
        self._losses, self._where = [], []
        bad = ~torch.isfinite(losses)
        local = bool(bad.any())
        # Every rank stops together, or the others would wait for it forever.
        if not trainer.strategy.reduce_boolean_decision(local, all=False):
            return
        if local:
            first = int(bad.nonzero()[0])
            step, epoch, batch_idx = where[first]
            value = f" ({losses[first].item()})"
        else:
            step, epoch, batch_idx = where[0]
            value, step = " (on another rank)", f"{step} or later"
        raise NonFiniteError(
            f"the training loss is not finite{value} at step {step} (epoch {epoch}, batch "
            f"{batch_idx}): training stopped, and nothing from this step on was saved. Lower "
            "optimizer.lr or clip gradients (trainer.gradient_clip_val=1.0)"
        )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self.check(trainer)
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
