"""Classification on class folders: ``root/train/<class>/*``, ``root/val/<class>/*`` and an
optional ``root/test/<class>/*``, JPEG, PNG or WebP, any class names, 2 classes or more:
the generic datamodule that ImageNet's extends (``zoo.data.imagenet.imagenet``), as
torchvision's ImageNet extends its ImageFolder.

Two input paths, picked by ``decode`` (``zoo.data.imagenet.io``):

- ``cpu``: DataLoader workers read, decode and augment each image (RandomResizedCrop + flip, or
  resize + centre crop) and hand over uint8 crops; the main process only normalises, on the
  device.
- ``gpu``: workers only read the file bytes; the batch is decoded by nvJPEG
  (``zoo.data.images.decode_jpegs``: TorchCodec's ``decode_jpeg(device="cuda")``; the other
  formats are decoded by the workers) and cropped, flipped and normalised on the GPU in
  ``on_after_batch_transfer``, so the CPU cores don't hold the GPU back. Without a GPU the same
  code decodes on the CPU, which is how it is tested.

Besides: the training augmentation, the evaluation resize and crop, subsets (``classes``,
``images_per_class``, ``holdout_per_class``), the pre-scan of ``skip_corrupt``, and errors that
name the file or folder at fault (``ImageNetDataError``). For a folder of the user's own:

- the class names are the folder names (sorted), stored in the checkpoint through the data
  config (``describe``), so that ``evaluate.py predict=`` reports them;
- the classes are counted from ``train/`` before the model is built: ``data.num_classes`` need
  not be given;
- ``test/`` is the test split when it exists, else ``val/`` is both.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from zoo.core.errors import ConfigError
from zoo.core.files import path_problem
from zoo.core.schema import option
from zoo.data.base import (
    DataSchema,
    Normalization,
    ZooDataModule,
    batch_size_field,
    channels_field,
    eval_batch_size_field,
    image_size_field,
    num_classes_field,
    num_workers_field,
)
from zoo.data.imagenet.io import (
    DecodedImages,
    EncodedBatch,
    EncodedImages,
    ImageNetDataError,
    decode_batch,
    verify_image,
)
from zoo.data.imagenet.layout import all_classes, first_classes, list_images, split_samples
from zoo.data.imagenet.transforms import (
    AUTO_AUGMENT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    normalize,
    train_transform,
)
from zoo.data.images import MAX_IMAGE_PIXELS
from zoo.data.sampling import (
    LoaderPerSplit,
    ResumableTrainingOrder,
    WholeBatches,
    as_is,
    evaluation_share,
    split_batch_size,
)

log = logging.getLogger(__name__)

DECODERS = ("cpu", "gpu")
CLASS = "<class>"


class ImageFolderError(ImageNetDataError):
    """An image folder that does not have the layout it needs; the message names the path."""


@dataclasses.dataclass(kw_only=True)
class ImageFolderConfig(DataSchema):
    """zoo/configs/data/image_folder.yaml."""

    title: ClassVar[str] = "data=image_folder"
    must_match: ClassVar[tuple[str, ...]] = (
        *DataSchema.must_match,
        "classes",
        "images_per_class",
        "holdout_per_class",
    )

    name: str = "image_folder"
    root: str
    batch_size: int = batch_size_field(256)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(8)
    prefetch_factor: int = option(2, ge=1)
    image_size: int | None = image_size_field(224)
    resize_size: int | None = option(None, ge=1)
    # Normalisation; null: ImageNet's (or the pretrained weights', which training passes).
    mean: list[float] | None = None
    std: list[float] | None = None
    decode: str = option("cpu", choices=DECODERS)
    color_jitter: float = option(0.0, ge=0, lt=1)
    auto_augment: str | None = option(
        None,
        valid=lambda policy: policy is None or policy in AUTO_AUGMENT,
        what=f"null or one of {sorted(AUTO_AUGMENT)}",
    )
    random_erasing: float = option(0.0, ge=0, le=1, what="a probability in [0, 1]")
    classes: int | None = option(None, ge=1)
    images_per_class: int | None = option(None, ge=1)
    holdout_per_class: int = option(0, ge=0)
    skip_corrupt: bool = False
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, ge=1)
    channels: int = channels_field(3, 1, 3)
    num_classes: int | None = num_classes_field(None)
    class_names: list[str] | None = None

    def check(self, key: str) -> None:
        super().check(key)
        if self.mean is not None or self.std is not None:
            channel_statistics(self.mean, self.std, self.channels, key)


def channel_statistics(
    mean: Sequence[float] | None, std: Sequence[float] | None, channels: int, key: str = "data"
) -> Normalization:
    """The normalisation of ``channels``-channel batches from ``mean``/``std`` (None: ImageNet's;
    the training run passes pretrained weights' own). For ``channels=1``, three-channel
    statistics are averaged: a grey pixel is what an RGB network sees as three equal channels,
    as the first convolution of 1-channel pretrained weights assumes. ConfigError naming
    ``key.mean``/``key.std`` if they don't fit the channels."""
    mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
    if channels == 1 and len(mean) == len(std) == 3:
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    if len(mean) != channels or len(std) != channels:
        raise ConfigError(
            f"{key}.mean and {key}.std need {channels} value(s) each, got {mean} and {std}"
        )
    if not all(value > 0 for value in std):
        raise ConfigError(f"{key}.std must be positive, got {std}")
    return Normalization(mean, std)


def class_folders(root: Path) -> list[str]:
    """The class names of ``root``: the folders of train/, which val/ (and test/, if there is
    one) must have too."""
    problem = path_problem(root, "folder")
    if problem is not None:
        raise ImageFolderError(
            f"image folder root {root} {problem}: set data.root to the folder holding "
            f"train/{CLASS}/ and val/{CLASS}/ (and optionally test/{CLASS}/)"
        )
    names = all_classes(root, CLASS)
    if (root / "test").exists():
        all_classes(root, CLASS, other="test")
    return names


class ImageFolderDataModule(LoaderPerSplit, ResumableTrainingOrder, ZooDataModule):
    """Classification on ``root/{train,val[,test]}/<class>/*``: train on train/, validate on
    val/ (or on ``holdout_per_class`` training images per class), test on test/ (or val/).

    What a class-folder dataset does its own way is in four hooks: ``prepare_data`` (nothing
    here), ``_all_classes``, ``_class_names`` and ``_split_samples``; ``describe`` reads the
    classes from the folders."""

    task = "classification"
    schema = ImageFolderConfig
    title = "Image folder"  # how log lines name the dataset

    def __init__(
        self,
        root: str,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        image_size: int = 224,
        decode: str = "cpu",
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        classes: int | None = None,
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
        super().__init__()
        # Stored in the checkpoint, so evaluation can redo the same preprocessing.
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.num_classes = classes
        self._class_names_found: list[str] = []
        self.wnids: list[str] = []  # the class folders used, in label order
        self.splits: dict[str, list[tuple[str, int]]] = {}
        self.skipped: list[str] = []
        self.pixel_statistics = channel_statistics(mean, std, channels)
        grey = [v2.Grayscale(num_output_channels=1)] if channels == 1 else []
        self.normalize = v2.Compose([*grey, *normalize(*self.pixel_statistics).transforms])
        self.train_transform = train_transform(
            image_size, color_jitter, auto_augment, random_erasing
        )
        self.eval_transform = eval_transform(image_size, resize_size)

    @classmethod
    def describe(cls, config: ImageFolderConfig) -> ImageFolderConfig:  # type: ignore[override]
        """``config`` with ``num_classes`` and ``class_names`` read from the folders (a scan of
        train/ and val/, not of the images), so that the model can be built before the data."""
        root = config.root
        folder = Path(root).expanduser()
        names = class_folders(folder)
        used = first_classes(folder, names, config.classes or len(names))
        given = config.class_names
        if given and list(given) != used:
            raise ImageFolderError(
                f"data.class_names={list(given)} differ from the class folders of "
                f"{root}/train ({used}): leave data.class_names null"
            )
        return dataclasses.replace(config, num_classes=len(used), class_names=used)

    def normalization(self) -> Normalization:
        return self.pixel_statistics

    @property
    def class_names(self) -> list[str]:
        """The classes' names, once setup() has listed the folders."""
        return self._class_names_found

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._list_splits()
        if stage == "fit":
            self.training_order()

    def _list_splits(self) -> None:
        self.prepare_data()  # cheap when done; covers setup() without prepare_data()
        all_names = self._all_classes()
        k = self.hparams.classes or len(all_names)  # None: every class folder
        self.wnids = first_classes(self.root, all_names, k)
        self._check_model_outputs(k)
        self._class_names_found = self._class_names(all_names)
        self.splits = self._split_samples()
        if self.hparams.skip_corrupt:
            self._skip_unreadable()
        if (
            self.hparams.decode == "gpu"
            and self.trainer is not None
            and self.trainer.strategy.root_device.type != "cuda"
        ):
            log.warning(
                "data.decode=gpu without a GPU decodes each batch in the main process, far "
                "slower than data.decode=cpu (which decodes in the workers)"
            )
        sizes = " / ".join(f"{s} {len(v):,}" for s, v in self.splits.items())
        log.info("%s %s: %d classes, %s images", self.title, self.root, k, sizes)

    # What a class-folder dataset may do its own way (zoo.data.imagenet.imagenet).
    def _all_classes(self) -> list[str]:
        """Every class folder under root, sorted."""
        return class_folders(self.root)

    def _class_names(self, all_classes: Sequence[str]) -> list[str]:
        """The names of the classes used (``self.wnids``, the first of ``all_classes``)."""
        return list(self.wnids)

    def _split_samples(self) -> dict[str, list[tuple[str, int]]]:
        """{"train", "val", "test"}: (path, label) samples."""
        splits = split_samples(
            self.root, self.wnids, self.hparams.images_per_class, self.hparams.holdout_per_class
        )
        test_dir = self.root / "test"
        if test_dir.is_dir():
            splits["test"] = [
                (path, label)
                for label, name in enumerate(self.wnids)
                for path in list_images(test_dir / name)
            ]
        return splits

    def _check_model_outputs(self, classes: int) -> None:
        # A label >= the model's outputs would otherwise fail deep in cross_entropy (on a GPU, as
        # an opaque device-side assert).
        module = self.trainer.lightning_module if self.trainer is not None else None
        outputs = getattr(getattr(module, "model", None), "num_classes", None)
        if outputs is not None and outputs != classes:
            raise ImageNetDataError(
                f"the model has {outputs} outputs but data.classes={classes} classes are used "
                f"from {self.root}: set data.classes (model.num_classes follows it)"
            )

    def _skip_unreadable(self) -> None:
        """Pre-scan every file with PIL (verify, then a full load) and drop the unreadable."""
        paths = sorted({p for samples in self.splits.values() for p, _ in samples})
        workers = max(1, self.hparams.num_workers)
        # Threads suffice: PIL releases the GIL while decoding.
        with ThreadPoolExecutor(workers) as pool:
            check = partial(verify_image, max_pixels=self.hparams.max_image_pixels)
            problems = dict(zip(paths, pool.map(check, paths), strict=True))
        bad = {p: why for p, why in problems.items() if why}
        if not bad:
            return
        self.skipped = sorted(bad)
        listing = "\n".join(f"  {p}: {bad[p]}" for p in self.skipped)
        log.warning("skipping %d unreadable image(s) (data.skip_corrupt):\n%s", len(bad), listing)
        for split, samples in self.splits.items():
            self.splits[split] = [(p, label) for p, label in samples if p not in bad]
            if not self.splits[split]:
                raise ImageNetDataError(
                    f"no readable images left in the {split} split of {self.root}"
                )

    def _dataset(self, split: str) -> Dataset:
        train = split == "train"
        samples = self.splits[split]
        limit = self.hparams.max_image_pixels
        if self.hparams.decode == "gpu":
            return EncodedImages(samples, train, limit)
        return DecodedImages(samples, self.train_transform if train else self.eval_transform, limit)

    def _loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        collate = dataset.collate if isinstance(dataset, EncodedImages) else default_collate
        workers = self.hparams.num_workers
        options: dict[str, Any] = {
            "num_workers": workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
            "prefetch_factor": self.hparams.prefetch_factor if workers > 0 else None,
        }
        overfitting = self.trainer is not None and self.trainer.overfit_batches > 0
        if split == "train" and not overfitting:
            order = self.training_order()
            # The shuffle resumes mid-epoch (zoo.training.resume), and each rank reads its
            # share. Workers seed their augmentations from the run's seed, not from the global
            # RNG, whose stream a resumed run restores exactly.
            return DataLoader(
                WholeBatches(dataset, collate),
                sampler=order,
                batch_size=None,
                collate_fn=as_is,
                generator=torch.Generator().manual_seed(order.seed),
                **options,
            )
        batch_size = split_batch_size(self.hparams, split)
        share = evaluation_share(self.trainer, dataset, split)
        return DataLoader(
            dataset, sampler=share, batch_size=batch_size, collate_fn=collate, **options
        )

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if isinstance(batch, EncodedBatch):
            # nvJPEG reads the encoded bytes from host memory: only the labels move now.
            batch.labels = batch.labels.to(device, non_blocking=True)
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(
        self, batch: Any, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, EncodedBatch):
            device = batch.labels.device
            transform = self.train_transform if batch.train else self.eval_transform
            images = torch.stack([transform(image) for image in decode_batch(batch, device)])
            return self.normalize(images), batch.labels
        images, labels = batch
        return self.normalize(images), labels.long()

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB images (3, H, W) of any size, e.g. from files -> the evaluation batch."""
        return self.normalize(torch.stack([self.eval_transform(image) for image in images]))
