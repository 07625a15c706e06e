"""SYNTHETIC stand-in for ImageNet, for throughput only: random images and labels with its
shapes, so a model's speed can be measured without the dataset."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from zoo.core.errors import ConfigError
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
from zoo.data.imagenet.layout import NUM_CLASSES
from zoo.data.sampling import LoaderPerSplit, evaluation_share, split_batch_size

log = logging.getLogger(__name__)

# The most images of a split: eight times ImageNet's training set.
MAX_SPLIT_SIZE = 10_000_000


@dataclasses.dataclass(kw_only=True)
class ImageNetSyntheticConfig(DataSchema):
    """zoo/configs/data/imagenet_synthetic.yaml."""

    title: ClassVar[str] = "data=imagenet_synthetic"
    must_match: ClassVar[tuple[str, ...]] = (*DataSchema.must_match, "classes")

    name: str = "imagenet_synthetic"
    batch_size: int = batch_size_field(256)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(0)
    image_size: int | None = image_size_field(224)
    classes: int = option(NUM_CLASSES, ge=1)
    # Each split's labels are drawn at once: 10^7 of them are 80 MB.
    train_size: int = option(1_281_167, ge=1, at_most=MAX_SPLIT_SIZE)
    val_size: int = option(50_000, ge=1, at_most=MAX_SPLIT_SIZE)
    seed: int = 0
    channels: int = channels_field(3, 3)
    num_classes: int | None = num_classes_field(None)  # configs: ${.classes}
    class_names: list[str] | None = None


class ImageNetSyntheticDataModule(LoaderPerSplit, ZooDataModule):
    """SYNTHETIC: random images and labels with ImageNet's shapes, for throughput only.

    One fixed random batch lives on the training device and every step reuses it, so the
    measurement is the model's alone; the accuracies it logs mean nothing.
    """

    task = "classification"
    schema = ImageNetSyntheticConfig

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int = 224,
        classes: int = NUM_CLASSES,
        train_size: int = 1_281_167,
        val_size: int = 50_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes = classes
        self.labels: dict[str, torch.Tensor] = {}
        self._images: torch.Tensor | None = None

    def normalization(self) -> Normalization:
        """None to speak of: the images are drawn in the network's input space (N(0, 1)), which
        pixel space is taken to be."""
        return Normalization((0.0,) * 3, (1.0,) * 3)

    @property
    def class_names(self) -> list[str]:
        return [f"synthetic_{i}" for i in range(self.hparams.classes)]

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        raise ConfigError(
            "data=imagenet_synthetic is random tensors, not images: name the dataset the model "
            "was trained for (data=imagenet, data=image_folder) to preprocess image files"
        )

    def setup(self, stage: str | None = None) -> None:
        if self.labels:
            return
        log.warning(
            "data=imagenet_synthetic: random tensors with ImageNet's shapes (3x%d x %d, %d "
            "classes), NOT ImageNet; for throughput measurements only, accuracies mean nothing",
            self.hparams.image_size,
            self.hparams.image_size,
            self.hparams.classes,
        )
        generator = torch.Generator().manual_seed(self.hparams.seed)
        sizes = {"train": self.hparams.train_size, "val": self.hparams.val_size}
        sizes["test"] = sizes["val"]
        self.labels = {
            split: torch.randint(self.hparams.classes, (n,), generator=generator)
            for split, n in sizes.items()
        }

    def _loader(self, split: str) -> DataLoader:
        labels = self.labels[split]
        batch_size = split_batch_size(self.hparams, split)
        workers = {
            "num_workers": self.hparams.num_workers,
            "persistent_workers": self.hparams.num_workers > 0,
        }
        if split != "train":
            share = evaluation_share(self.trainer, labels, split)
            return DataLoader(labels, sampler=share, batch_size=batch_size, **workers)
        # One index per batch (BatchSampler as the sampler): only labels cross the loader.
        return DataLoader(
            labels,
            sampler=BatchSampler(RandomSampler(labels), batch_size, drop_last=False),
            batch_size=None,
            **workers,
        )

    def on_after_batch_transfer(
        self, batch: torch.Tensor, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch.long()
        size = self.hparams.image_size
        largest = max(self.hparams.batch_size, self.hparams.eval_batch_size or 0)
        if self._images is None or self._images.device != labels.device:
            generator = torch.Generator(labels.device).manual_seed(self.hparams.seed)
            self._images = torch.randn(
                largest, 3, size, size, generator=generator, device=labels.device
            )
        return self._images[: len(labels)], labels
