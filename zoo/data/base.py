"""What every dataset of the zoo is: a ``ZooDataModule``, with the members the rest of the zoo
uses, and a ``DataSchema``, the typed config it owns.

A dataset is one name for three things (tests/data/test_base.py): the datamodule registered
under it in ``zoo.data``, defined with its schema in a module of that name
(``zoo/data/[<family>/]<name>.py``; the modules beside it are helpers), and
``zoo/configs/data/<name>.yaml``, whose keys are the schema's fields.

The members are declared here, so that a datamodule lacking one fails when its class is
defined (the class attributes) or built (the abstract methods), never later where the zoo
reads it: training (``train_sampler`` for exact resume), adversarial training and attacks
(``normalization``, to work in pixel space), reports (``class_names``), ``evaluate.py
predict=`` (``preprocess_images``), and building the model before the data (``describe``).
"""

from __future__ import annotations

import dataclasses
import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar, get_args

import pytorch_lightning as pl
import torch

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option
from zoo.data.sampling import ResumableBatchSampler

Task = Literal["classification", "segmentation"]
TASKS: tuple[str, ...] = get_args(Task)

C = TypeVar("C", bound="DataSchema")


# --- the config ---------------------------------------------------------------------------------
# Fields every dataset has, each dataset with its own default (that of its datamodule's
# constructor): one definition of what is valid for each.


# A batch is on the device at once: 65,536 ImageNet-sized images are 39 GB before any
# activation. Worker processes are each a copy of the loading process.
MAX_BATCH_SIZE = 65_536
MAX_WORKERS = 128


def batch_size_field(default: int) -> Any:
    """``batch_size``: the training batch (and evaluation's, without ``eval_batch_size``)."""
    return option(default, ge=1, at_most=MAX_BATCH_SIZE)


def eval_batch_size_field(default: int | None = None) -> Any:
    """``eval_batch_size``: the validation and test batch; null: ``batch_size``."""
    return option(default, ge=1, at_most=MAX_BATCH_SIZE)


def num_workers_field(default: int) -> Any:
    """``num_workers``: DataLoader worker processes; 0 loads in the main process."""
    return option(default, ge=0, at_most=MAX_WORKERS)


def image_size_field(default: int | None, smallest: int = 1, why: str = "") -> Any:
    """``image_size``: the side of the square inputs; null: the model's native size, resolved
    before the datamodule is built (``zoo.tasks.build.image_size``)."""
    return option(default, ge=smallest, what=f"an integer >= {smallest}{why} or null")


def channels_field(default: int, *choices: int) -> Any:
    """``channels``: 1 (grey) or 3 (RGB), as far as the dataset offers them."""
    names = {1: "1 (grayscale)", 3: "3 (RGB)"}
    return option(default, choices=choices, what=" or ".join(names[c] for c in choices))


def num_classes_field(default: int | None, *, fixed: bool = False) -> Any:
    """``num_classes``: the model's outputs (``model.num_classes`` follows it). ``fixed``: the
    dataset's labels are what they are, and no other number fits them."""
    if fixed:
        return option(default, choices=(default,), what=f"{default}, the dataset's classes")
    return option(default, ge=1)


@dataclasses.dataclass(kw_only=True)
class DataSchema(Schema):
    """The keys of every data config: the dataset's ``name``, what the models need to know about
    it (``channels``, ``num_classes``, ``class_names``, interpolated into the model configs),
    and the batching. Each dataset's schema adds its datamodule's own arguments."""

    # The keys a resumed run must share with its checkpoint (zoo.training.resume): those that
    # change the inputs' shape or the classes, or the training order whose position the
    # checkpoint holds. Each dataset adds its own.
    must_match: ClassVar[tuple[str, ...]] = (
        "name",
        "image_size",
        "channels",
        "num_classes",
        "batch_size",
    )

    name: str
    batch_size: int = batch_size_field(32)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(0)
    image_size: int | None = image_size_field(None)
    channels: int = channels_field(3, 1, 3)
    num_classes: int | None = num_classes_field(None)
    # Names for the reports; null: the datamodule's own (ZooDataModule.class_names).
    class_names: list[str] | None = None

    def check(self, key: str) -> None:
        names, classes = self.class_names, self.num_classes
        if names is not None and classes is not None and len(names) != classes:
            raise ConfigError(
                f"{key}.class_names has {len(names)} names for {key}.num_classes={classes}: "
                "give one name per class, or null"
            )

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each field's default (``dataclasses.MISSING`` for a required one)."""
        return {
            field.name: field.default_factory()
            if field.default_factory is not dataclasses.MISSING
            else field.default
            for field in dataclasses.fields(cls)
        }


# --- the datamodule -----------------------------------------------------------------------------


class Normalization(NamedTuple):
    """Per-channel mean and std of the pixels, in pixel units (images scaled to [0, 1]): the
    network sees ``(pixels - mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


class ZooDataModule(pl.LightningDataModule, ABC):
    """Base of every registered datamodule: what the rest of the zoo may use of one.

    Class attributes, checked when a concrete subclass is defined:

    - ``task``: what its targets serve, ``"classification"`` (a class per image) or
      ``"segmentation"`` (a class per pixel);
    - ``schema``: its config (a ``DataSchema``), whose fields include every constructor argument,
      with the constructor's defaults.

    Members, abstract until a subclass has them: ``normalization()``, ``class_names``,
    ``preprocess_images(images)``; and ``describe(config)`` (default: the config as it is),
    ``train_sampler`` (None: no resumable training order).
    """

    task: ClassVar[Task]
    schema: ClassVar[type[DataSchema]]
    # The training order that exact resume restores its position into (zoo.training.resume);
    # made in setup("fit") by the datamodules that shuffle resumably (zoo.data.sampling).
    train_sampler: ResumableBatchSampler | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract_members(cls):
            return  # a base for other datamodules: checked in its concrete subclasses
        task = getattr(cls, "task", None)
        if task not in TASKS:
            raise TypeError(f"{cls.__name__}.task must be one of {TASKS}, got {task!r}")
        schema = getattr(cls, "schema", None)
        if not (isinstance(schema, type) and issubclass(schema, DataSchema)):
            raise TypeError(f"{cls.__name__}.schema must be a DataSchema, got {schema!r}")
        defaults = schema.defaults()
        for name, parameter in inspect.signature(cls.__init__).parameters.items():
            if name == "self":
                continue
            if name not in defaults:
                raise TypeError(
                    f"{cls.__name__} takes {name}, which its schema {schema.__name__} lacks"
                )
            default = parameter.default
            if default is inspect.Parameter.empty:
                default = dataclasses.MISSING
            if default != defaults[name]:
                raise TypeError(
                    f"{cls.__name__}'s default {name}={default!r} differs from its schema "
                    f"{schema.__name__}'s {defaults[name]!r}"
                )

    @classmethod
    def describe(cls, config: C) -> C:
        """``config`` with what the dataset says about itself filled in, before the model is
        built and before any data is loaded (an image folder counts its class folders). Here:
        the config as it is."""
        return config

    @abstractmethod
    def normalization(self) -> Normalization:
        """The per-channel (mean, std) that the batches are normalised with, in pixel units."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """The classes' names, in label order; empty where only setup() finds them (an ImageNet
        subset)."""

    @abstractmethod
    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 images (C, H, W) of any size, e.g. read from files, as the batch that the
        model takes: what evaluation does to a stored image of the dataset."""


def abstract_members(cls: type) -> list[str]:
    """The abstract methods and properties of ``cls``, as ABCMeta counts them (which it does
    only once the class exists, after ``__init_subclass__``)."""
    return sorted(
        name
        for name in dir(cls)
        if getattr(getattr(cls, name, None), "__isabstractmethod__", False)
    )
