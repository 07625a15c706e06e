"""MNIST as tensors in memory, batched on the training device (zoo.data.in_memory).

MNIST is 47 MB of uint8: the whole split stays as one tensor (on the GPU when training there),
a batch is one fancy-index, and padding / resizing / normalising / distorting run batched on
the device in ``on_after_batch_transfer``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torchvision import datasets
from torchvision.transforms import v2

from zoo.core.schema import Schema, option
from zoo.data.base import (
    DataSchema,
    Normalization,
    batch_size_field,
    channels_field,
    eval_batch_size_field,
    image_size_field,
    num_classes_field,
    num_workers_field,
)
from zoo.data.distortions import RandomDistortion
from zoo.data.in_memory import InMemoryDataModule, Split
from zoo.data.mnist.files import ensure_mnist

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
RESIZE_MODES = ("pad", "bilinear")
# MNIST's 60,000 training images, which data.val_size splits into train and validation.
MNIST_TRAINING_IMAGES = 60_000
DIGITS = [str(digit) for digit in range(10)]


def val_size_field(default: int) -> Any:
    """``val_size``: the validation digits, taken from MNIST's training images."""
    return option(
        default,
        gt=0,
        lt=MNIST_TRAINING_IMAGES,
        what=f"an integer in (0, {MNIST_TRAINING_IMAGES}): the validation images taken from "
        f"MNIST's {MNIST_TRAINING_IMAGES} training images, leaving the rest to train on",
    )


@dataclasses.dataclass(kw_only=True)
class DistortionConfig(Schema):
    """``data.distortion``: the random affine distortion of training batches."""

    max_rotation: float = option(10.0, ge=0)  # degrees
    max_scale: float = option(0.1, ge=0, lt=1)  # scale in [1 - max_scale, 1 + max_scale]
    max_shift: float = option(2.0, ge=0)  # pixels


@dataclasses.dataclass(kw_only=True)
class MNISTConfig(DataSchema):
    """zoo/configs/data/mnist.yaml."""

    title: ClassVar[str] = "data=mnist"
    must_match: ClassVar[tuple[str, ...]] = (
        *DataSchema.must_match,
        "resize",
        "val_size",
        "split_seed",
    )

    name: str = "mnist"
    data_dir: str = "data"
    batch_size: int = batch_size_field(128)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(0)
    image_size: int | None = image_size_field(28)
    resize: str = option("pad", choices=RESIZE_MODES)
    val_size: int = val_size_field(5000)
    split_seed: int = 12345
    device_resident: bool = True
    verify: bool = True
    distortion: DistortionConfig | None = None
    channels: int = channels_field(1, 1)
    num_classes: int | None = num_classes_field(10, fixed=True)
    class_names: list[str] | None = None


def batch_transform(image_size: int, resize: str, mean: float, std: float) -> v2.Compose:
    """uint8 (N, 1, 28, 28) -> normalised float (N, 1, S, S), on whatever device the batch is;
    ``resize``: one of RESIZE_MODES."""
    steps: list[v2.Transform] = [v2.ToDtype(torch.float32, scale=True)]
    if image_size != 28:
        if resize == "pad" and image_size > 28 and (image_size - 28) % 2 == 0:
            # LeNet-5's 32x32 input: the digit centred in a blank border, as in the paper.
            steps.append(v2.Pad((image_size - 28) // 2))
        else:
            steps.append(v2.Resize((image_size, image_size), antialias=True))
    steps.append(v2.Normalize([mean], [std]))
    return v2.Compose(steps)


class MNISTDataModule(InMemoryDataModule):
    """The real MNIST: a seeded 55,000 / 5,000 train/val split and the official 10,000 test set."""

    task = "classification"
    schema = MNISTConfig

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

    def prepare_data(self) -> None:
        ensure_mnist(self.data_dir, self.hparams.verify)

    def load_splits(self) -> dict[str, Split]:
        ensure_mnist(self.data_dir, self.hparams.verify)  # also covers setup() alone
        train = datasets.MNIST(str(self.data_dir), train=True, download=False)
        test = datasets.MNIST(str(self.data_dir), train=False, download=False)
        generator = torch.Generator().manual_seed(self.hparams.split_seed)
        order = torch.randperm(len(train.targets), generator=generator)
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        return {
            "train": (train.data[train_idx], train.targets[train_idx]),
            "val": (train.data[val_idx], train.targets[val_idx]),
            "test": (test.data, test.targets),
        }

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

    def normalization(self) -> Normalization:
        return Normalization((MNIST_MEAN,), (MNIST_STD,))

    @property
    def class_names(self) -> list[str]:
        return list(DIGITS)

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 grey images (1, H, W) of any size, e.g. from files -> the batch training makes."""
        digits = [v2.functional.resize(image, [28, 28], antialias=True) for image in images]
        return self.transform(torch.stack(digits))
