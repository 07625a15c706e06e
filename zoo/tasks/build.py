"""Building what a run needs from plain config, the one way training and evaluation both use:
the task module, the image size the model takes, the datamodule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from zoo import data, models
from zoo.core.errors import ConfigError
from zoo.tasks import TASKS, task_class
from zoo.tasks.base import ZooTask


def task_options(options: Mapping[str, Any], module_cls: type[ZooTask]) -> dict[str, Any]:
    """The keys of the ``task:`` block that ``module_cls`` takes.

    The block holds the options of every task (label_smoothing, aux_loss_weight for
    classification; loss, dice_weight for segmentation); each module takes its own. A key that
    no task takes is a mistake.
    """
    unknown = sorted(set(options) - set().union(*(cls.options() for cls in TASKS.values())))
    if unknown:
        raise ConfigError(f"task.{unknown[0]} is not an option of any task ({sorted(TASKS)})")
    mine = module_cls.options()
    return {key: value for key, value in options.items() if key in mine}


def build_task(
    model: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None = None,
) -> ZooTask:
    """The task module for the registry model ``model`` (plain dicts all), before any data is
    touched; impossible values raise ConfigError."""
    module_cls = task_class(model.get("name"))
    try:
        return module_cls(
            model=dict(model),
            optimizer=dict(optimizer),
            scheduler=dict(scheduler) if scheduler else None,
            data=dict(data) if data is not None else None,
            **task_options(options or {}, module_cls),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def image_size(model: models.ZooModel, requested: int | None) -> int:
    """``requested`` (data.image_size), or the model's native size when None; checked against
    what the model accepts."""
    size = requested or model.native_input_size[0]
    try:
        model.check_input_size(size)
    except ValueError as err:
        raise ConfigError(f"data.image_size={size}: {err}") from err
    return int(size)


def build_datamodule(spec: Mapping[str, Any], **overrides: Any) -> pl.LightningDataModule:
    """``zoo.data.build``, with impossible values as ConfigError naming the data config."""
    try:
        return data.build(spec, **overrides)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err
