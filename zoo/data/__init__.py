"""Datamodules by name: ``zoo.data.build({"name": "mnist", "batch_size": 64, ...})``."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from zoo.core.registry import Registry
from zoo.data.folder import SegmentationFolderDataModule
from zoo.data.image_folder import ImageFolderDataModule
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
DATAMODULES.register("image_folder")(ImageFolderDataModule)

# Data configs also state what the models need to know (interpolated into model configs);
# those keys describe the dataset and are not datamodule arguments, unless a datamodule asks
# for them (a folder of the user's own data needs num_classes to check its masks).
DESCRIPTIVE_KEYS = ("name", "channels", "num_classes", "class_names")


def available() -> list[str]:
    return DATAMODULES.names()


def task(name: str) -> str:
    """What the targets of dataset ``name`` are for, as the models' ``task`` says it:
    ``"segmentation"`` (a class per pixel) or ``"classification"`` (one per image)."""
    return getattr(DATAMODULES.get(name), "task", "classification")


def arguments(name: str) -> list[str]:
    """The arguments the datamodule ``name`` takes (its config's other keys describe it)."""
    return DATAMODULES.entry(name).arguments


def describe(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with what the dataset itself says about it filled in, before the model is built:
    an image folder counts and names its class folders (``data.num_classes``,
    ``data.class_names``). Other datasets state it in their config."""
    hook = getattr(DATAMODULES.get(spec["name"]), "describe", None)
    return hook(spec) if hook is not None else dict(spec)


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
