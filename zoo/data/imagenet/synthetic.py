"""SYNTHETIC stand-in for ImageNet, for throughput only: random images and labels with its
shapes, so a model's speed can be measured without the dataset."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler

from zoo.data.imagenet.layout import NUM_CLASSES
from zoo.data.sampling import LoaderPerSplit, evaluation_share, split_batch_size

log = logging.getLogger(__name__)


class ImageNetSyntheticDataModule(LoaderPerSplit, pl.LightningDataModule):
    """SYNTHETIC: random images and labels with ImageNet's shapes, for throughput only.

    One fixed random batch lives on the training device and every step reuses it, so the
    measurement is the model's alone; the accuracies it logs mean nothing.
    """

    channels = 3

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
        self.class_names = [f"synthetic_{i}" for i in range(classes)]
        self.labels: dict[str, torch.Tensor] = {}
        self._images: torch.Tensor | None = None

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
