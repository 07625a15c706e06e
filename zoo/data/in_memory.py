"""Datasets that fit in memory as tensors: the batching that MNIST and the segmentation
datamodules share, and what the segmentation ones share besides.

Decoding one PIL image per sample in worker processes costs far more than a small network. Each
split stays as one tensor per field (on the GPU when training there), a batch is one
fancy-index, and the datamodules transform whole batches on the device in
``on_after_batch_transfer``. The training order is a ResumableBatchSampler, so that a run
resumed mid-epoch sees exactly the batches it had not (zoo.training.resume).

A segmentation split is ``(images, masks)``: uint8 ``(N, C, H, W)`` and integer ``(N, H, W)``
class indices, all of one size, normalised batched on the training device.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from zoo.data.base import ZooDataModule
from zoo.data.sampling import ResumableTrainingOrder, as_is, evaluation_share, split_batch_size

Split = tuple[torch.Tensor, ...]
SEGMENTATION_SPLITS = ("train", "val", "test")


class IndexedTensors(TensorDataset):
    """A TensorDataset that hands over a whole batch of indices with one tensor index."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(tensor[index] for tensor in self.tensors)


class InMemoryDataModule(ResumableTrainingOrder, ZooDataModule):
    """Base class: subclasses implement ``load_splits`` and store (``save_hyperparameters``)
    ``batch_size``, ``eval_batch_size``, ``num_workers`` and ``device_resident``."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[str, IndexedTensors] = {}

    @abstractmethod
    def load_splits(self) -> dict[str, Split]:
        """``{"train": (inputs, targets), "val": ..., "test": ...}``, on the CPU."""

    def setup(self, stage: str | None = None) -> None:
        self.load()
        if stage == "fit":
            self.training_order()

    def load(self) -> None:
        """The splits, loaded once, onto the device they stay on (``resident_device``)."""
        if not self.splits:
            device = self.resident_device()
            self.splits = {
                name: IndexedTensors(*(tensor.to(device) for tensor in tensors))
                for name, tensors in self.load_splits().items()
            }

    def resident_device(self) -> torch.device:
        """The training GPU when there is one and ``device_resident`` is on, else the CPU."""
        trainer = self.trainer
        if self.hparams.device_resident and trainer is not None:
            device = trainer.strategy.root_device
            if device.type == "cuda":
                return device
        return torch.device("cpu")

    def _shuffled(self, batches: Sampler) -> DataLoader:
        dataset = self.splits["train"]
        on_gpu = dataset.tensors[0].is_cuda
        workers = 0 if on_gpu else self.hparams.num_workers
        # A sampler of index batches and batch_size=None: one tensor index per batch, instead
        # of one __getitem__ per sample plus a collate. The loader's own generator keeps iter()
        # off the global RNG, whose state a resumed run restores exactly as it was saved.
        return DataLoader(
            dataset,
            sampler=batches,
            batch_size=None,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=not on_gpu and torch.cuda.is_available(),
            generator=torch.Generator(),
        )

    def _in_order(self, split: str, batch_size: int) -> DataLoader:
        # This rank's share, batched by the loader (Lightning keeps batch_size when it swaps the
        # sampler for a SequentialSampler to overfit), each batch still one tensor index,
        # through IndexedTensors.__getitems__.
        dataset = self.splits[split]
        share = evaluation_share(self.trainer, dataset, split)
        return DataLoader(dataset, sampler=share, batch_size=batch_size, collate_fn=as_is)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.overfit_batches > 0:
            return self._in_order("train", self.hparams.batch_size)
        return self._shuffled(self.training_order())

    def val_dataloader(self) -> DataLoader:
        return self._in_order("val", split_batch_size(self.hparams, "val"))

    def test_dataloader(self) -> DataLoader:
        return self._in_order("test", split_batch_size(self.hparams, "test"))


class InMemorySegmentationDataModule(InMemoryDataModule):
    """Base class: subclasses implement ``load_splits`` (returning ``(images, masks)`` pairs),
    ``normalization`` and ``class_names``, and store ``image_size`` too."""

    task = "segmentation"  # a class per pixel

    def __init__(self) -> None:
        super().__init__()
        self.transform: v2.Compose | None = None

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (N, C, H, W) -> float, normalised, on whatever device they are."""
        if self.transform is None:
            mean, std = self.normalization()
            self.transform = v2.Compose(
                [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
            )
        return self.transform(images)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = batch
        return self.normalize(images), masks.long()

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 images (C, H, W) of any size -> resized to the canvases' size, normalised."""
        size = [self.hparams.image_size] * 2
        resized = [TF.resize(image, size, antialias=True) for image in images]
        return self.normalize(torch.stack(resized))
