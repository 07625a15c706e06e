"""What the segmentation datamodules share: images and masks as tensors in memory, batched on
the training device.

A split is ``(images, masks)``: uint8 ``(N, C, H, W)`` and uint8 ``(N, H, W)`` class indices,
all of one size. As for MNIST, the tensors stay in memory (on the GPU when training there), a
batch is one fancy-index, and the float conversion and normalisation run batched on the device
in ``on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
)
from torchvision.transforms import v2

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]


class SegmentationDataError(ValueError):
    """Segmentation data that can't be used as it is; the message names the file."""


class InMemorySegmentationDataModule(pl.LightningDataModule):
    """Base class: subclasses implement ``load_splits`` and ``normalization``, and store (through
    ``save_hyperparameters``) ``batch_size``, ``eval_batch_size``, ``num_workers`` and
    ``device_resident``."""

    num_classes: int
    channels: int

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, TensorDataset] = {}
        self.transform: v2.Compose | None = None

    def load_splits(self) -> dict[str, Split]:
        """``{"train": (images, masks), "val": ..., "test": ...}`` on the CPU."""
        raise NotImplementedError

    def normalization(self, train_images: torch.Tensor) -> tuple[Sequence[float], Sequence[float]]:
        """Per-channel (mean, std) of images scaled to [0, 1]."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        splits = self.load_splits()
        mean, std = self.normalization(splits["train"][0])
        self.transform = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )
        device = self._resident_device()
        self.splits = {
            name: TensorDataset(images.to(device), masks.to(device))
            for name, (images, masks) in splits.items()
        }

    def _resident_device(self) -> torch.device:
        trainer = self.trainer
        if self.hparams.device_resident and trainer is not None:
            device = trainer.strategy.root_device
            if device.type == "cuda":
                return device
        return torch.device("cpu")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # The same batching as MNISTDataModule: a BatchSampler as the sampler and
        # batch_size=None, so a batch is one tensor index instead of N __getitem__ + collate.
        dataset = self.splits[split]
        batch_size = self.hparams.batch_size
        if split != "train":
            batch_size = self.hparams.eval_batch_size or batch_size
        order = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        on_gpu = dataset.tensors[0].is_cuda
        workers = 0 if on_gpu else self.hparams.num_workers
        return DataLoader(
            dataset,
            sampler=BatchSampler(order, batch_size, drop_last=False),
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=not on_gpu and torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Split, dataloader_idx: int) -> Split:
        images, masks = batch
        assert self.transform is not None, "setup() builds the transform"
        return self.transform(images), masks.long()
