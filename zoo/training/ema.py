"""An exponential moving average of the weights: Lightning's EMAWeightAveraging, evaluated on the
average after training too; its settings (zoo/configs/callbacks/ema.yaml) checked by
:class:`EMAConfig`."""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option

log = logging.getLogger(__name__)

# What zoo/configs/callbacks/ema.yaml's _target_ names: how a callbacks group's EMA is found.
EMA_TARGET = f"{__name__}.EMA"


@dataclasses.dataclass
class EMAConfig(Schema):
    """The settings of callbacks=ema, as EMAWeightAveraging takes them."""

    title = "callbacks=ema"

    _target_: str = EMA_TARGET
    # average <- decay * average + (1 - decay) * weights, at each update; 1 would never move.
    decay: float = option(0.999, ge=0, lt=1)
    update_every_n_steps: int = option(1, ge=1)
    # null: from the first step; N: from step N on (and/or from epoch N on, at each epoch's end).
    update_starting_at_step: int | None = option(None, ge=0, what="an integer >= 0 or null")
    update_starting_at_epoch: int | None = option(None, ge=0, what="an integer >= 0 or null")
    # Average the buffers too (BatchNorm's running statistics).
    use_buffers: bool = True

    def callback_arguments(self) -> dict[str, Any]:
        """The keyword arguments of EMAWeightAveraging."""
        arguments = self.to_dict()
        del arguments["_target_"]
        return arguments

    def updates(self, steps: int, steps_per_epoch: int, after_the_first: bool = False) -> int:
        """How many times a run of ``steps`` optimizer steps, ``steps_per_epoch`` of them per
        epoch, updates the average, as EMAWeightAveraging.should_update decides: after each step
        whose index (from 0) is ``update_starting_at_step`` or later and a multiple of
        ``update_every_n_steps``, and at the end of each epoch from ``update_starting_at_epoch``
        on. ``after_the_first``: not counting the update after the first step. The first update
        sets the average to the weights of that moment."""
        every = self.update_every_n_steps
        start = max(self.update_starting_at_step or 0, 1 if after_the_first else 0)
        start = -(-start // every) * every  # the first multiple of every from there
        at_steps = max(0, -(-(steps - start) // every))
        epochs = -(-steps // max(1, steps_per_epoch))
        from_epoch = self.update_starting_at_epoch
        at_epoch_ends = 0 if from_epoch is None else max(0, epochs - from_epoch)
        return at_steps + at_epoch_ends

    def _schedule(self) -> str:
        """The settings that say when the average is updated, those not at their defaults:
        "update_starting_at_step=500 and update_every_n_steps=10"."""
        every = self.update_every_n_steps
        settings = {
            "update_starting_at_step": self.update_starting_at_step,
            "update_every_n_steps": None if every == 1 else every,
            "update_starting_at_epoch": self.update_starting_at_epoch,
        }
        return " and ".join(f"{k}={v}" for k, v in settings.items() if v is not None)

    def check_schedule(self, steps: int, steps_per_epoch: int, how: str) -> None:
        """ConfigError where a run of ``steps`` optimizer steps (``how``: where that number comes
        from) would leave the average at the weights of the first step or before, which every
        checkpoint, the test after training and evaluate.py would then score. A warning where
        the first update's weights still make more than half of the average at the end."""
        updates = self.updates(steps, steps_per_epoch)
        if steps > 1 and self.updates(steps, steps_per_epoch, after_the_first=True) == 0:
            if updates:
                what, kept = "updates the average after the first step only", "the first step's"
            else:
                what, kept = "never updates the average", "the untrained"
            raise ConfigError(
                f"callbacks=ema with {self._schedule()} {what} in this run's {steps} steps "
                f"({how}): it would keep {kept} weights, which every checkpoint, the test and "
                "evaluate.py would score. Start the updates before the run's end"
            )
        first_weight = self.decay ** (updates - 1) if updates > 1 else 0.0
        if first_weight > 0.5:
            log.warning(
                f"callbacks.ema: {updates} updates of the average in this run's {steps} steps "
                f"({how}) leave the first update's weights {first_weight:.0%} of it at the end "
                f"(decay {self.decay:g}): lower the decay for a run this short"
            )


def parse_ema(callbacks: Mapping[str, Any] | DictConfig | None) -> dict[str, EMAConfig]:
    """The EMA entries of a composed ``callbacks`` group (callbacks=ema puts one under ``ema``),
    checked, by their names; ConfigError naming ``callbacks.<name>.<key>`` otherwise."""
    return {
        name: EMAConfig.parse(node, f"callbacks.{name}")
        for name, node in (callbacks or {}).items()
        if isinstance(node, Mapping) and node.get("_target_") == EMA_TARGET
    }


class EMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging (callbacks=ema), its settings checked by
    :class:`EMAConfig`, with one change: only ``fit`` restores the raw weights of a checkpoint.

    Its checkpoints hold the average as ``state_dict`` and the raw weights as
    ``current_model_state``. Lightning 2.6.6 loads ``current_model_state`` back into the module
    whenever the callback has an average, which after ``fit`` includes ``trainer.test(ckpt_path=
    best)``: the test would score the raw weights of the checkpoint chosen for its average. Here
    test, validate and predict keep the average Lightning loaded from ``state_dict`` (as
    evaluate.py does); resuming a fit still restores both, exactly.
    """

    def __init__(self, **settings: Any) -> None:
        self.config = EMAConfig.parse(settings, "callbacks.ema")
        super().__init__(**self.config.callback_arguments())

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Where the run's length is known (its data loaded), before the first step.
        steps = trainer.estimated_stepping_batches
        if math.isinf(steps):
            return  # no max_steps nor max_epochs: the run goes on until it is stopped
        batches = trainer.num_training_batches
        per_epoch = int(steps) if math.isinf(batches) else int(batches)
        per_epoch = max(1, per_epoch // trainer.accumulate_grad_batches)
        how = (
            f"trainer.max_steps={trainer.max_steps}"
            if trainer.max_steps > 0
            else f"trainer.max_epochs={trainer.max_epochs} of {per_epoch} steps"
        )
        self.config.check_schedule(int(steps), per_epoch, how)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


def check_resumed_averaging(path: Path, checkpoint_averages: bool, run_averages: bool) -> None:
    """ConfigError where a resume from ``path`` would switch callbacks=ema on or off:
    ``checkpoint_averages``, the checkpoint holds an average beside its raw weights;
    ``run_averages``, this run has callbacks=ema."""
    if checkpoint_averages == run_averages:
        return
    if checkpoint_averages:
        raise ConfigError(
            f"{path} was trained with callbacks=ema, this run has no EMA: it would train on from "
            "the checkpoint's average instead of its weights. Resume with callbacks=ema (and its "
            "settings of the first run), or start a fresh run (without ckpt_path, in a new "
            "hydra.run.dir)"
        )
    raise ConfigError(
        f"{path} was trained without callbacks=ema, this run has it: a resume continues the "
        "checkpoint's run unchanged. Resume without callbacks=ema, or start a fresh run (without "
        "ckpt_path, in a new hydra.run.dir) to train with it"
    )
