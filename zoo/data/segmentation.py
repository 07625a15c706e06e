"""What the segmentation datamodules share: images and masks as tensors in memory
(``zoo.data.in_memory``), normalised batched on the training device.

A split is ``(images, masks)``: uint8 ``(N, C, H, W)`` and integer ``(N, H, W)`` class indices,
all of one size. The float conversion and normalisation run on whole batches, on the device, in
``on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

from zoo.core.errors import ZooError
from zoo.data.in_memory import InMemoryDataModule

SPLITS = ("train", "val", "test")
Split = tuple[torch.Tensor, torch.Tensor]


class SegmentationDataError(ZooError, ValueError):
    """Segmentation data that can't be used as it is; the message names the file."""


class InMemorySegmentationDataModule(InMemoryDataModule):
    """Base class: subclasses implement ``load_splits`` (returning ``Split`` pairs) and
    ``normalization``."""

    num_classes: int
    channels: int
    task = "segmentation"  # a class per pixel (zoo.data.task)

    def __init__(self) -> None:
        super().__init__()
        self.transform: v2.Compose | None = None

    def normalization(self, train_images: torch.Tensor) -> tuple[Sequence[float], Sequence[float]]:
        """Per-channel (mean, std) of images scaled to [0, 1]."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.transform is None:
            mean, std = self.normalization(self.splits["train"].tensors[0])
            self.transform = v2.Compose(
                [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
            )

    def on_after_batch_transfer(self, batch: Split, dataloader_idx: int) -> Split:
        images, masks = batch
        if self.transform is None:
            raise RuntimeError(f"{type(self).__name__}.setup() was not called")
        return self.transform(images), masks.long()
