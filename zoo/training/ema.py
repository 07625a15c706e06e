"""An exponential moving average of the weights: Lightning's EMAWeightAveraging, evaluated on the
average after training too; its settings (configs/callbacks/ema.yaml) checked by
:class:`EMAConfig`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EMAWeightAveraging
from pytorch_lightning.trainer.states import TrainerFn

from zoo.core.schema import Schema, option

# What configs/callbacks/ema.yaml's _target_ names: how a callbacks group's EMA is found.
EMA_TARGET = f"{__name__}.EMA"


@dataclasses.dataclass
class EMAConfig(Schema):
    """The settings of callbacks=ema, as EMAWeightAveraging takes them."""

    title = "callbacks=ema"

    _target_: str = EMA_TARGET
    # average <- decay * average + (1 - decay) * weights, at each update.
    decay: float = option(0.999, ge=0, le=1)
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
        config = EMAConfig.parse(settings, "callbacks.ema")
        super().__init__(**config.callback_arguments())

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
