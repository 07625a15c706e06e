"""The zoo's datasets by name: ``zoo.data.build({"name": "mnist", "batch_size": 64, ...})``.

Each name is one dataset (``zoo.data.base``): a ``ZooDataModule`` registered here under it and
defined in ``zoo/data/[<family>/]<name>.py``, its ``DataSchema``, and
``zoo/configs/data/<name>.yaml``. A data config is checked against its dataset's schema where it is
first read, by ``parse`` (through ``describe`` before the model is built, and ``build``):
unknown keys, wrong types and values out of bounds are a ConfigError naming ``data.<key>``,
before any data is loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from zoo.core.errors import ConfigError
from zoo.core.registry import Registry
from zoo.data.base import DataSchema, ZooDataModule, abstract_members
from zoo.data.image_folder import ImageFolderDataModule
from zoo.data.imagenet.imagenet import ImageNetDataModule
from zoo.data.imagenet.imagenet_synthetic import ImageNetSyntheticDataModule
from zoo.data.mnist.mnist import MNISTDataModule
from zoo.data.mnist.mnist_segmentation import MNISTSegmentationDataModule
from zoo.data.segmentation_folder import SegmentationFolderDataModule

log = logging.getLogger(__name__)

DATAMODULES: Registry[ZooDataModule] = Registry("dataset")


def register(name: str, datamodule: type[ZooDataModule]) -> None:
    """Register ``datamodule`` as the dataset ``name``: a concrete ZooDataModule only, so that
    one lacking a member fails here, when the zoo is imported."""
    if not (isinstance(datamodule, type) and issubclass(datamodule, ZooDataModule)):
        raise TypeError(f"dataset {name!r}: {datamodule!r} is not a ZooDataModule")
    missing = abstract_members(datamodule)
    if missing:
        raise TypeError(f"dataset {name!r}: {datamodule.__name__} lacks {', '.join(missing)}")
    DATAMODULES.register(name, datamodule)


register("mnist", MNISTDataModule)
register("mnist_segmentation", MNISTSegmentationDataModule)
register("imagenet", ImageNetDataModule)
register("imagenet_synthetic", ImageNetSyntheticDataModule)
register("image_folder", ImageFolderDataModule)
register("segmentation_folder", SegmentationFolderDataModule)


def available() -> list[str]:
    return DATAMODULES.names()


def datamodule_class(name: str) -> type[ZooDataModule]:
    """The datamodule registered as ``name``; ConfigError naming ``data.name`` if none is."""
    if name not in DATAMODULES:
        raise ConfigError(
            f"data.name={name!r} is not a zoo dataset; available: {', '.join(available())}"
        )
    return DATAMODULES.get(name)  # type: ignore[return-value]


def schema(name: str) -> type[DataSchema]:
    """The config schema of dataset ``name``."""
    return datamodule_class(name).schema


def task(name: str) -> str:
    """What the targets of dataset ``name`` are for, as the models' ``task`` says it:
    ``"segmentation"`` (a class per pixel) or ``"classification"`` (one per image)."""
    return datamodule_class(name).task


def arguments(name: str) -> list[str]:
    """The arguments the datamodule ``name`` takes (its config's other keys describe it)."""
    return DATAMODULES.entry(name).arguments


def must_match(name: str) -> tuple[str, ...]:
    """The data keys a run resumed on dataset ``name`` must share with its checkpoint."""
    return schema(name).must_match


def parse(spec: Mapping[str, Any]) -> DataSchema:
    """``spec`` (a data config: ``data`` of a composed config, or a plain mapping) checked
    against its dataset's schema, defaults filled in; ConfigError naming ``data.<key>`` for an
    unknown key, a wrong type or a value out of bounds."""
    return schema(str(spec.get("name"))).parse(spec, "data")


def describe(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec``, checked (``parse``), with what the dataset itself says about it filled in,
    before the model is built: an image folder counts and names its class folders
    (``data.num_classes``, ``data.class_names``). Other datasets state it in their config."""
    config = parse(spec)
    return datamodule_class(config.name).describe(config).to_dict()


def build(spec: Mapping[str, Any], **overrides: Any) -> ZooDataModule:
    """The datamodule that ``spec["name"]`` names, from ``spec`` with ``overrides`` (the
    resolved image size, the pretrained weights' normalisation), checked first (``parse``).
    The keys that only describe the dataset go to the datamodule where it takes them."""
    config = parse({**spec, **overrides})
    values = config.to_dict()
    return DATAMODULES.build(config.name, **{key: values[key] for key in arguments(config.name)})


def restore(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A data config read back from a checkpoint (``stored``), made one that ``parse`` takes:
    the keys its dataset's schema no longer has (written by an older zoo) are left out, and
    logged; the keys it lacks take the schema's defaults when it is parsed. A dataset that is
    not the zoo's is left for ``parse`` to refuse."""
    name = stored.get("name")
    if name not in DATAMODULES:
        return dict(stored)
    fields = schema(name).defaults()
    dropped = sorted(set(stored) - set(fields))
    if dropped:
        log.warning(
            "the checkpoint's data config holds %s, which data=%s no longer has: ignored",
            ", ".join(dropped),
            name,
        )
    return {key: value for key, value in stored.items() if key in fields}


__all__ = [
    "DATAMODULES",
    "DataSchema",
    "ZooDataModule",
    "arguments",
    "available",
    "build",
    "datamodule_class",
    "describe",
    "must_match",
    "parse",
    "register",
    "restore",
    "schema",
    "task",
]
