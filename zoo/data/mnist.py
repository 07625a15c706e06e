"""MNIST as tensors in memory, batched on the training device.

MNIST is 47 MB of uint8: decoding one PIL image per sample in worker processes costs far more
than the network. The whole split stays as one tensor (on the GPU when training there), a
batch is one fancy-index, and padding / resizing / normalising run batched on the device in
``on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Sampler,
    SequentialSampler,
    TensorDataset,
)
from torchvision import datasets
from torchvision.transforms import v2

from zoo.data.distortions import RandomDistortion
from zoo.data.mnist_files import ensure_mnist
from zoo.data.sampling import ResumableBatchSampler

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
RESIZE_MODES = ("pad", "bilinear")


def batch_transform(image_size: int, resize: str, mean: float, std: float) -> v2.Compose:
    """uint8 (N, 1, 28, 28) -> normalised float (N, 1, S, S), on whatever device the batch is."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"data.resize must be one of {RESIZE_MODES}, got {resize!r}")
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    if image_size != 28:
        if resize == "pad" and image_size > 28 and (image_size - 28) % 2 == 0:
            # LeNet-5's 32x32 input: the digit centred in a blank border, as in the paper.
            steps.append(v2.Pad((image_size - 28) // 2))
        else:
            steps.append(v2.Resize((image_size, image_size), antialias=True))
    steps.append(v2.Normalize([mean], [std]))
    return v2.Compose(steps)


class IndexedTensors(TensorDataset):
    """A TensorDataset that hands over a whole batch of indices with one tensor index."""

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, device=self.tensors[0].device)
        return tuple(tensor[index] for tensor in self.tensors)


def as_is(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate of batches that IndexedTensors already made."""
    return batch


class MNISTDataModule(pl.LightningDataModule):
    """The real MNIST: a seeded 55,000 / 5,000 train/val split and the official 10,000 test set."""

    num_classes = 10
    channels = 1
    class_names = tuple(str(digit) for digit in range(10))

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int = 28,
        resize: str = "pad",
        val_size: int = 5000,
        split_seed: int = 12345,
        device_resident: bool = True,
        verify: bool = True,
        distortion: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        # Stored in the checkpoint, so evaluation can redo the same preprocessing.
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.transform = batch_transform(image_size, resize, MNIST_MEAN, MNIST_STD)
        # Training batches only; the background after normalisation is what gets filled in.
        self.distort = (
            RandomDistortion(**distortion, fill=-MNIST_MEAN / MNIST_STD) if distortion else None
        )
        self.splits: dict[str, TensorDataset] = {}
        # Made in setup("fit"), before a checkpoint's position in the shuffle is restored into it.
        self.train_sampler: ResumableBatchSampler | None = None

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, self.hparams.verify)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._load_splits()
        if stage == "fit" and self.train_sampler is None:
            self.train_sampler = self._shuffled_batches()

    def _load_splits(self) -> dict[str, TensorDataset]:
        ensure_mnist(
            self.data_dir, self.hparams.verify
        )  # cheap when present; covers setup() without prepare_data()
        train = datasets.MNIST(str(self.data_dir), train=True, download=False)
        test = datasets.MNIST(str(self.data_dir), train=False, download=False)
        device = self._resident_device()
        images, labels = train.data.to(device), train.targets.to(device)
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(labels), generator=generator).to(device)
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        return {
            "train": IndexedTensors(images[train_idx], labels[train_idx]),
            "val": IndexedTensors(images[val_idx], labels[val_idx]),
            "test": IndexedTensors(test.data.to(device), test.targets.to(device)),
        }

    def _shuffled_batches(self) -> ResumableBatchSampler:
        trainer = self.trainer
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        # The run's seed (seed_everything sets torch's), else a random one; rank 0's, so that all
        # ranks shuffle alike. Checkpoints keep it with the position (zoo.fault_tolerance).
        seed = torch.initial_seed() % 2**63
        if trainer is not None:
            seed = trainer.strategy.broadcast(seed)
        return ResumableBatchSampler(
            self.splits["train"],
            self.hparams.batch_size,
            seed=seed,
            num_replicas=replicas,
            rank=rank,
        )

    def _resident_device(self) -> torch.device:
        trainer = self.trainer
        if self.hparams.device_resident and trainer is not None:
            device = trainer.strategy.root_device
            if device.type == "cuda":
                return device
        return torch.device("cpu")

    def _loader(self, split: str, batches: Sampler) -> DataLoader:
        dataset = self.splits[split]
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
        # A batch_sampler over a SequentialSampler, which Lightning leaves in place (it swaps
        # any other sampler for a per-sample one when overfitting), and each batch still one
        # tensor index, through IndexedTensors.__getitems__.
        dataset = self.splits[split]
        batches = BatchSampler(SequentialSampler(dataset), batch_size, drop_last=False)
        return DataLoader(dataset, batch_sampler=batches, collate_fn=as_is)

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.overfit_batches > 0:
            return self._in_order("train", self.hparams.batch_size)
        if self.train_sampler is None:
            self.train_sampler = self._shuffled_batches()
        return self._loader("train", self.train_sampler)

    def val_dataloader(self) -> DataLoader:
        return self._in_order("val", self.hparams.eval_batch_size or self.hparams.batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._in_order("test", self.hparams.eval_batch_size or self.hparams.batch_size)

    def on_after_batch_transfer(
        self, batch: tuple[torch.Tensor, torch.Tensor], dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        images = self.transform(images.unsqueeze(1))
        # Distort training batches only, and not while overfitting (debug=overfit) a fixed few.
        trainer = self.trainer
        training = trainer is not None and trainer.training and not trainer.overfit_batches
        if self.distort is not None and training:
            images = self.distort(images)
        return images, labels.long()

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 grey images (1, H, W) of any size, e.g. from files -> the batch training makes."""
        digits = [v2.functional.resize(image, [28, 28], antialias=True) for image in images]
        return self.transform(torch.stack(digits))
