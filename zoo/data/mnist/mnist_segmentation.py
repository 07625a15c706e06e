"""MNIST segmentation: canvases with 1 to 4 real MNIST digits at random places, labelled per pixel.

Label 0 is background; a pixel where a digit is inked (brighter than ``ink_threshold``) is
labelled with that digit's class + 1, so there are 11 classes. Digits may overlap, but never
where both are inked: a pixel where two strokes cross could belong to either.

The digits come from the same splits as ``MNISTDataModule``: training canvases from its 55,000
training digits, validation canvases from its 5,000 validation digits, and test canvases from
the official 10,000 test digits. The test canvases are drawn with a fixed seed of their own
(``canvas_seed`` moves only the training and validation canvases), so with the same data
settings, test results compare from run to run.

All canvases are generated once, vectorised, in ``setup`` (20,000 training canvases: 164 MB,
about 7 s on one core), then served like MNIST (``zoo.data.in_memory``): as tensors, batched
on the training device.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from zoo.core.errors import ConfigError
from zoo.core.schema import option
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
from zoo.data.in_memory import InMemorySegmentationDataModule, Split
from zoo.data.mnist.mnist import DIGITS, MNIST_MEAN, MNIST_STD, MNISTDataModule, val_size_field

DIGIT_SIZE = 28
CLASS_NAMES = ["background", *DIGITS]
# Fixed for every run and every config: the test canvases must be the same each time.
TEST_SEED = 20151118
# Canvases are composited this many at a time, to bound the (chunk, candidates, 28, 28) buffer.
CHUNK = 1024
# Random places tried per digit for one where its ink meets no ink already on the canvas.
CANDIDATES = 16
# The most canvases of a split: 100,000 canvases of 64 x 64 and their masks are 800 MB (bytes).
MAX_CANVASES = 100_000


def draw_without_replacement(
    population: int, count: int, generator: torch.Generator
) -> torch.Tensor:
    """``count`` indices into ``range(population)``, each used once before any is reused."""
    rounds = -(-count // population)
    order = torch.cat([torch.randperm(population, generator=generator) for _ in range(rounds)])
    return order[:count]


def make_canvases(
    digits: torch.Tensor,
    labels: torch.Tensor,
    count: int,
    size: int = 64,
    digits_per_canvas: tuple[int, int] = (1, 4),
    threshold: int = 127,
    generator: torch.Generator | None = None,
) -> Split:
    """``count`` canvases from uint8 ``digits`` (M, 28, 28) with their ``labels`` (M,).

    Returns uint8 images (count, 1, size, size) and uint8 masks (count, size, size): 0 where
    the canvas is at most ``threshold``, else 1 + the class of the digit inked there. Digits
    never share an inked pixel: where two strokes cross, no image could tell whose the pixel
    is. Each digit goes to the first of ``CANDIDATES`` random places where its ink meets none
    already on the canvas; a digit that fits none is left out (rare: the first always fits).
    The same generator state gives the same canvases.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    digits, labels = digits.cpu(), labels.cpu().long()
    low, high = digits_per_canvas
    slots = high

    per_canvas = torch.randint(low, high + 1, (count,), generator=generator)
    present = torch.arange(slots) < per_canvas[:, None]  # (count, slots)
    which = torch.zeros(count, slots, dtype=torch.long)
    which[present] = draw_without_replacement(len(digits), int(present.sum()), generator)
    span = size - DIGIT_SIZE + 1
    tops = torch.randint(0, span, (count, slots, CANDIDATES), generator=generator)
    lefts = torch.randint(0, span, (count, slots, CANDIDATES), generator=generator)

    images = torch.zeros(count, 1, size, size, dtype=torch.uint8)
    masks = torch.zeros(count, size, size, dtype=torch.uint8)
    offsets = torch.arange(DIGIT_SIZE)
    for start in range(0, count, CHUNK):
        chunk = slice(start, min(start + CHUNK, count))
        n = chunk.stop - chunk.start
        canvas, mask = images[chunk, 0], masks[chunk]  # views: filled in place
        at = torch.arange(n)
        for slot in range(slots):
            digit = digits[which[chunk, slot]]  # (n, 28, 28)
            ink = digit > threshold
            # Every candidate place at once: the mask under the digit's 28x28 box there.
            rows = tops[chunk, slot, :, None, None] + offsets[:, None]  # (n, K, 28, 1)
            cols = lefts[chunk, slot, :, None, None] + offsets[None, :]  # (n, K, 1, 28)
            under = mask[at[:, None, None, None], rows, cols] > 0  # (n, K, 28, 28)
            free = ~(under & ink[:, None]).flatten(2).any(dim=2)  # (n, K)
            place = present[chunk, slot] & free.any(dim=1)
            first = free.int().argmax(dim=1)  # the first free candidate
            rows, cols = rows[at, first], cols[at, first]  # (n, 28, 1), (n, 1, 28)
            box = (at[:, None, None], rows, cols)
            digit = digit * place[:, None, None]
            canvas[box] = torch.maximum(canvas[box], digit)
            label = (labels[which[chunk, slot]] + 1).to(torch.uint8)[:, None, None]
            mask[box] = torch.where(ink & place[:, None, None], label, mask[box])
    return images, masks


@dataclasses.dataclass(kw_only=True)
class MNISTSegmentationConfig(DataSchema):
    """zoo/configs/data/mnist_segmentation.yaml."""

    title: ClassVar[str] = "data=mnist_segmentation"
    must_match: ClassVar[tuple[str, ...]] = (
        *DataSchema.must_match,
        "train_canvases",
        "canvas_seed",
        "val_size",
        "split_seed",
    )

    name: str = "mnist_segmentation"
    data_dir: str = "data"
    batch_size: int = batch_size_field(32)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(0)
    image_size: int | None = image_size_field(64, DIGIT_SIZE, " (an MNIST digit)")
    min_digits: int = 1  # digits per canvas: 1 <= min_digits <= max_digits (check)
    max_digits: int = 4
    ink_threshold: float = option(0.5, gt=0, lt=1)
    # Each split's canvases are drawn at once and held in memory.
    train_canvases: int = option(20000, ge=1, at_most=MAX_CANVASES)
    val_canvases: int = option(1000, ge=1, at_most=MAX_CANVASES)
    test_canvases: int = option(2000, ge=1, at_most=MAX_CANVASES)
    canvas_seed: int = 0
    val_size: int = val_size_field(5000)
    split_seed: int = 12345
    device_resident: bool = True
    verify: bool = True
    channels: int = channels_field(1, 1)
    num_classes: int | None = num_classes_field(11, fixed=True)
    class_names: list[str] | None = None

    def check(self, key: str) -> None:
        super().check(key)
        if not 1 <= self.min_digits <= self.max_digits:
            raise ConfigError(
                f"{key}.min_digits and {key}.max_digits must satisfy 1 <= min_digits <= "
                f"max_digits, got {self.min_digits} and {self.max_digits}"
            )


class MNISTSegmentationDataModule(InMemorySegmentationDataModule):
    """64x64 canvases of 1 to 4 MNIST digits, 11 classes: background and the ten digits."""

    schema = MNISTSegmentationConfig

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int = 64,
        min_digits: int = 1,
        max_digits: int = 4,
        ink_threshold: float = 0.5,
        train_canvases: int = 20000,
        val_canvases: int = 1000,
        test_canvases: int = 2000,
        canvas_seed: int = 0,
        val_size: int = 5000,
        split_seed: int = 12345,
        device_resident: bool = True,
        verify: bool = True,
    ) -> None:
        super().__init__()
        # Stored in the checkpoint, so evaluation can rebuild the same canvases.
        self.save_hyperparameters()
        # The digit splits come from the classification datamodule, so the two share them.
        self.digits = MNISTDataModule(
            data_dir=data_dir,
            val_size=val_size,
            split_seed=split_seed,
            device_resident=False,
            verify=verify,
        )

    def prepare_data(self) -> None:
        self.digits.prepare_data()

    def load_splits(self) -> dict[str, Split]:
        digit_splits = self.digits.load_splits()
        hp = self.hparams
        seeds = {"train": hp.canvas_seed, "val": hp.canvas_seed + 1, "test": TEST_SEED}
        counts = {"train": hp.train_canvases, "val": hp.val_canvases, "test": hp.test_canvases}
        splits = {}
        for split, (digits, labels) in digit_splits.items():
            splits[split] = make_canvases(
                digits,
                labels,
                counts[split],
                size=hp.image_size,
                digits_per_canvas=(hp.min_digits, hp.max_digits),
                threshold=int(hp.ink_threshold * 255),
                generator=torch.Generator().manual_seed(seeds[split]),
            )
        return splits

    def normalization(self) -> Normalization:
        return Normalization((MNIST_MEAN,), (MNIST_STD,))  # the digits' own, as for MNIST

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES)
