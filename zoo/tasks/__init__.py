"""One LightningModule per task; a model's ``task`` attribute picks it."""

from __future__ import annotations

import pytorch_lightning as pl

from zoo.tasks.classification import ClassificationModule
from zoo.tasks.segmentation import SegmentationModule

TASKS: dict[str, type[pl.LightningModule]] = {
    "classification": ClassificationModule,
    "segmentation": SegmentationModule,
}
