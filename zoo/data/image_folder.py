"""Your own images for classification: ``root/train/<class>/*``, ``root/val/<class>/*`` and an
optional ``root/test/<class>/*``, JPEG, PNG or WebP, any class names, any number of classes.

It is the ImageNet pipeline (``zoo.data.imagenet``) with the user's classes: both decode paths
(``decode=cpu|gpu``; nvJPEG takes the JPEGs, the rest is decoded on the CPU), the training
augmentation, the evaluation resize and crop, subsets (``classes``, ``images_per_class``), the
pre-scan of ``skip_corrupt``, and the errors that name the file or folder at fault. What differs:

- the class names are the folder names (sorted), stored in the checkpoint through the data
  config (``describe``), so that ``evaluate.py predict=`` reports them;
- the classes are counted from ``train/`` before the model is built: ``data.num_classes`` need
  not be given;
- ``test/`` is the test split when it exists, else ``val/`` is both.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from zoo.data.imagenet.datamodule import ImageNetDataModule
from zoo.data.imagenet.io import ImageNetDataError
from zoo.data.imagenet.layout import all_classes, list_images

CLASS = "<class>"


class ImageFolderError(ImageNetDataError):
    """An image folder that does not have the layout it needs; the message names the path."""


def class_folders(root: Path) -> list[str]:
    """The class names of ``root``: the folders of train/, which val/ (and test/, if there is
    one) must have too."""
    if not root.is_dir():
        raise ImageFolderError(
            f"image folder root {root} does not exist: set data.root to the folder holding "
            f"train/{CLASS}/ and val/{CLASS}/ (and optionally test/{CLASS}/)"
        )
    names = all_classes(root, CLASS)
    if (root / "test").exists():
        all_classes(root, CLASS, other="test")
    return names


class ImageFolderDataModule(ImageNetDataModule):
    """Classification on ``root/{train,val[,test]}/<class>/*`` with ImageNet's pipeline; takes
    the same arguments (``classes=None``: every class folder; ``layout`` is always folders)."""

    title = "Image folder"

    @staticmethod
    def describe(spec: Mapping[str, Any]) -> dict[str, Any]:
        """``spec`` with ``num_classes`` and ``class_names`` read from the folders (a scan of
        train/ and val/, not of the images), so that the model can be built before the data."""
        names = class_folders(Path(os.fspath(spec["root"])).expanduser())
        classes = spec.get("classes") or len(names)
        if classes > len(names):
            raise ImageFolderError(
                f"data.classes={classes}, but {spec['root']}/train has only {len(names)} class "
                "folders"
            )
        given = spec.get("class_names")
        if given and list(given) != names[:classes]:
            raise ImageFolderError(
                f"data.class_names={list(given)} differ from the class folders of "
                f"{spec['root']}/train ({names[:classes]}): leave data.class_names null"
            )
        return {**spec, "num_classes": classes, "class_names": names[:classes]}

    def resolved_layout(self) -> str:
        class_folders(self.root)
        return "folders"

    def _all_classes(self) -> list[str]:
        return class_folders(self.root)

    def _class_names(self, all_wnids: Sequence[str]) -> list[str]:
        return list(self.wnids)

    def _split_samples(self) -> dict[str, list[tuple[str, int]]]:
        splits = super()._split_samples()
        test_dir = self.root / "test"
        if test_dir.is_dir():
            splits["test"] = [
                (path, label)
                for label, name in enumerate(self.wnids)
                for path in list_images(test_dir / name)
            ]
        return splits
