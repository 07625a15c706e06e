"""ILSVRC-2012 (ImageNet-1k), from the user's own copy: nothing can be downloaded.

A class-folder dataset (``zoo.data.image_folder``, whose input pipeline it shares: both decode
paths, the augmentation, subsets, ``skip_corrupt``), with what is ImageNet's own:

- ``root`` holds class folders or the official archives, which are unpacked once
  (``zoo.data.imagenet.layout``, ``layout``);
- the class names are the devkit's, or torchvision's for all 1000 classes, else the wnids;
- the official 50,000 validation images are the test split (and the validation split, unless
  ``holdout_per_class`` holds training images out instead);
- the classes are ``data.classes`` (the first K wnids), stated by the config, not counted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import ClassVar

from zoo.core.schema import option
from zoo.data.base import batch_size_field, num_classes_field, num_workers_field
from zoo.data.image_folder import ImageFolderConfig, ImageFolderDataModule
from zoo.data.imagenet.layout import (
    LAYOUTS,
    NUM_CLASSES,
    all_classes,
    class_names,
    prepare_archives,
    resolve_layout,
    split_samples,
)
from zoo.data.images import MAX_IMAGE_PIXELS


@dataclasses.dataclass(kw_only=True)
class ImageNetConfig(ImageFolderConfig):
    """zoo/configs/data/imagenet.yaml: an image folder's keys, ``layout``, ImageNet's defaults."""

    title: ClassVar[str] = "data=imagenet"

    name: str = "imagenet"
    root: str = "data/imagenet"
    layout: str = option("auto", choices=LAYOUTS)
    batch_size: int = batch_size_field(256)
    num_workers: int = num_workers_field(8)
    classes: int | None = option(NUM_CLASSES, ge=1)
    num_classes: int | None = num_classes_field(None)  # configs: ${.classes}


class ImageNetDataModule(ImageFolderDataModule):
    """ILSVRC-2012 classification: train on train/, validate and test on the official 50,000
    validation images (or validate on ``holdout_per_class`` training images per class)."""

    schema = ImageNetConfig
    title = "ImageNet"  # how log lines name the dataset

    def __init__(
        self,
        root: str = "data/imagenet",
        layout: str = "auto",
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        image_size: int = 224,
        decode: str = "cpu",
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        classes: int | None = NUM_CLASSES,
        images_per_class: int | None = None,
        holdout_per_class: int = 0,
        skip_corrupt: bool = False,
        prefetch_factor: int = 2,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize_size: int | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__(
            root=root,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            image_size=image_size,
            decode=decode,
            color_jitter=color_jitter,
            auto_augment=auto_augment,
            random_erasing=random_erasing,
            classes=classes,
            images_per_class=images_per_class,
            holdout_per_class=holdout_per_class,
            skip_corrupt=skip_corrupt,
            prefetch_factor=prefetch_factor,
            max_image_pixels=max_image_pixels,
            mean=mean,
            std=std,
            resize_size=resize_size,
            channels=channels,
        )

    @classmethod
    def describe(cls, config: ImageNetConfig) -> ImageNetConfig:  # type: ignore[override]
        """The config as it is: ImageNet's classes are ``data.classes``, and its root may hold
        only the archives, unpacked when the data is prepared."""
        return config

    def resolved_layout(self) -> str:
        """``folders`` or ``archives``, as data.layout says or, for ``auto``, as root holds."""
        return resolve_layout(self.root, self.hparams.layout)

    def prepare_data(self) -> None:
        if self.resolved_layout() == "archives":
            prepare_archives(self.root)

    def _all_classes(self) -> list[str]:
        return all_classes(self.root)

    def _class_names(self, all_classes: Sequence[str]) -> list[str]:
        return class_names(self.root, all_classes, self.wnids)

    def _split_samples(self) -> dict[str, list[tuple[str, int]]]:
        return split_samples(
            self.root, self.wnids, self.hparams.images_per_class, self.hparams.holdout_per_class
        )
