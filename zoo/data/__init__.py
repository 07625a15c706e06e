"""Datamodules by name: ``zoo.data.build({"name": "mnist", "batch_size": 64, ...})``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from zoo.core.registry import Registry
from zoo.data.folder import SegmentationFolderDataModule
from zoo.data.imagenet.datamodule import ImageNetDataModule
from zoo.data.imagenet.synthetic import ImageNetSyntheticDataModule
from zoo.data.mnist.classification import MNISTDataModule
from zoo.data.mnist.segmentation import MNISTSegmentationDataModule

DATAMODULES: Registry[pl.LightningDataModule] = Registry("dataset")
DATAMODULES.register("mnist")(MNISTDataModule)
DATAMODULES.register("imagenet")(ImageNetDataModule)
DATAMODULES.register("imagenet_synthetic")(ImageNetSyntheticDataModule)
DATAMODULES.register("mnist_segmentation")(MNISTSegmentationDataModule)
DATAMODULES.register("segmentation_folder")(SegmentationFolderDataModule)

# Data configs also state what the models need to know (interpolated into model configs);
# those keys describe the dataset and are not datamodule arguments, unless a datamodule asks
# for them (a folder of the user's own data needs num_classes to check its masks).
DESCRIPTIVE_KEYS = ("name", "channels", "num_classes", "class_names")


def available() -> list[str]:
    return DATAMODULES.names()


def build(spec: Mapping[str, Any], **overrides: Any) -> pl.LightningDataModule:
    """Build the datamodule that ``spec["name"]`` names from the rest of ``spec``."""
    accepted = inspect.signature(DATAMODULES.get(spec["name"])).parameters
    kwargs = {
        k: v
        for k, v in spec.items()
        if k not in DESCRIPTIVE_KEYS or (k != "name" and k in accepted)
    }
    kwargs.update(overrides)
    return DATAMODULES.build(spec["name"], **kwargs)
