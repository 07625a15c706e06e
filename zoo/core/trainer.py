"""The ``trainer`` config group: every argument of Lightning's Trainer, the keys the zoo checks,
and building the Trainer from it, for train.py and evaluate.py alike.

``configs/trainer/default.yaml`` starts from ``trainer/lightning``, a node registered in Hydra's
ConfigStore holding every Trainer argument at Lightning's own default, read from the installed
Lightning's signature: any argument is a plain override (``trainer.max_time=00:01:00:00``, no
``+``), none is spelled out for a version it may not fit, and the yaml files say only what the
zoo changes. :class:`TrainerConfig` is the schema of the arguments the zoo checks before a run
starts; Lightning checks the others when the Trainer is built (``build_trainer``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, is_integer, is_number, option

# The node configs/trainer/default.yaml extends.
LIGHTNING_DEFAULTS = "lightning"
# Trainer arguments that are config groups of their own (configs/logger, configs/callbacks).
OWN_GROUPS = ("logger", "callbacks")


def lightning_defaults() -> dict[str, Any]:
    """Every argument of ``pytorch_lightning.Trainer`` at its default, with ``_target_``."""
    parameters = inspect.signature(pl.Trainer.__init__).parameters
    return {
        "_target_": "pytorch_lightning.Trainer",
        **{
            name: parameter.default
            for name, parameter in parameters.items()
            if name != "self" and name not in OWN_GROUPS
        },
    }


def register_configs() -> None:
    """Put ``trainer/lightning`` into Hydra's ConfigStore; train.py, evaluate.py and
    ``zoo.core.config.compose_config`` call it before composing."""
    store = ConfigStore.instance()
    store.store(group="trainer", name=LIGHTNING_DEFAULTS, node=lightning_defaults())


def _interval(value: Any) -> bool:
    if value is None:
        return True
    if is_integer(value):
        return value >= 1
    return is_number(value) and 0 < value <= 1


@dataclass
class TrainerConfig(Schema):
    """The Trainer arguments the zoo checks before anything is built: counts and intervals that
    Lightning divides by or steps with (0 fails deep inside a run)."""

    max_epochs: int | None = option(None, ge=1, what="an integer >= 1")
    max_steps: int = option(-1, ge=-1)
    min_epochs: int | None = option(None, ge=0, what="an integer >= 0")
    accumulate_grad_batches: int = option(1, ge=1)
    log_every_n_steps: int | None = option(None, ge=1, what="an integer >= 1")
    check_val_every_n_epoch: int | None = option(1, ge=1, what="an integer >= 1 or null")
    val_check_interval: Any = option(
        None,
        valid=_interval,
        what="a number of batches >= 1, a fraction of an epoch in (0, 1], or null",
    )
    num_sanity_val_steps: int | None = option(
        None, ge=-1, what="an integer >= -1 (-1: all) or null"
    )
    gradient_clip_val: float | None = option(None, ge=0, what="a number >= 0 or null")

    def check(self, key: str) -> None:
        low, high = self.min_epochs, self.max_epochs
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{key}.min_epochs={low} is more than {key}.max_epochs={high}")


def build_trainer(trainer: DictConfig, **objects: Any) -> pl.Trainer:
    """The composed ``trainer`` group instantiated with ``objects`` (loggers, callbacks, ...);
    the values Lightning refuses are a ConfigError naming them."""
    try:
        return instantiate(trainer, **objects)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, MisconfigurationException | ValueError | TypeError):
            raise ConfigError(f"trainer: {cause}") from err
        raise
