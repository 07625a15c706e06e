"""One LightningModule per task; a model's ``task`` attribute picks it."""

from __future__ import annotations

from zoo import models
from zoo.core.errors import ConfigError
from zoo.tasks.base import ZooTask
from zoo.tasks.classification import ClassificationModule
from zoo.tasks.segmentation import SegmentationModule

TASKS: dict[str, type[ZooTask]] = {
    "classification": ClassificationModule,
    "segmentation": SegmentationModule,
}


def task_class(model_name: str) -> type[ZooTask]:
    """The task module that trains and tests the registered model ``model_name``."""
    if model_name not in models.available():
        raise ConfigError(
            f"model.name {model_name!r} is not a zoo model; available: {models.available()}"
        )
    task = models.MODELS.get(model_name).task
    if task not in TASKS:
        raise ConfigError(f"no task module for {task} models yet (model {model_name!r})")
    return TASKS[task]
