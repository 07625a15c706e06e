"""data.decode=gpu on the GPU: nvJPEG's batches agree with the CPU path's in shape, dtype and
value range, and its evaluation crops equal the CPU path's within the JPEG decoders' tolerance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.imagenet_pipeline import photo_like, write_jpeg_tree
from tests.data.test_imagenet import CLASSES, SIZES, TRAIN_PER_CLASS, VAL_PER_CLASS, save_jpeg
from tests.gpu.helpers import DEVICE, GPU
from zoo.data.imagenet.imagenet import ImageNetDataModule
from zoo.data.imagenet.transforms import IMAGENET_MEAN, IMAGENET_STD

pytestmark = GPU

# torchvision's own test of decode_jpeg(device="cuda") against libjpeg-turbo: mean |Δ| < 2 (of
# 255). nvJPEG and libjpeg-turbo differ in their IDCT and chroma upsampling.
DECODER_TOLERANCE = 2.0


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 classes of 6 + 2 JPEGs of varied sizes, plus a grayscale and a CMYK one (which nvJPEG
    can't decode: the GPU path falls back to the CPU for it)."""
    root = write_jpeg_tree(
        tmp_path_factory.mktemp("imagenet"), CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZES
    )
    rng = np.random.default_rng(1)
    save_jpeg(root / "train/n00000001/n00000001_gray.JPEG", photo_like(rng, 70, 50).convert("L"))
    save_jpeg(root / "train/n00000002/n00000002_cmyk.JPEG", photo_like(rng, 50, 70).convert("CMYK"))
    return root


def first_batch(root: Path, decode: str, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first batch of ``split`` as a step receives it on DEVICE, read by two workers."""
    dm = ImageNetDataModule(root=str(root), batch_size=64, num_workers=2, image_size=32,
                            classes=CLASSES, decode=decode)  # fmt: skip
    dm.setup("fit")
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader}[split]()
    iterator: Iterator = iter(loader)
    try:
        batch = dm.transfer_batch_to_device(next(iterator), DEVICE, 0)
        return dm.on_after_batch_transfer(batch, 0)
    finally:
        iterator._shutdown_workers()  # now, not whenever the garbage collector gets to them


def pixels(images: torch.Tensor) -> torch.Tensor:
    """Normalised batches back in 0..255."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean) * 255


def test_gpu_decoded_training_batches_have_the_cpu_paths_shape_dtype_and_range(
    tree: Path,
) -> None:
    (cpu, cpu_labels), (gpu, gpu_labels) = (first_batch(tree, d, "train") for d in ("cpu", "gpu"))
    assert gpu.shape == cpu.shape == (CLASSES * TRAIN_PER_CLASS + 2, 3, 32, 32)
    assert gpu.dtype == cpu.dtype == torch.float32 and gpu_labels.dtype == torch.long
    assert gpu.device.type == cpu.device.type == DEVICE.type
    assert sorted(gpu_labels.tolist()) == sorted(cpu_labels.tolist())
    for images in (cpu, gpu):
        values = pixels(images)
        assert values.min() >= -1e-3 and values.max() <= 255 + 1e-3
        assert 20 < values.mean() < 235  # photo-like, not blank


def test_gpu_decoded_evaluation_crops_equal_the_cpu_ones_within_the_decoders_tolerance(
    tree: Path,
) -> None:
    (cpu, cpu_labels), (gpu, gpu_labels) = (first_batch(tree, d, "val") for d in ("cpu", "gpu"))
    assert torch.equal(gpu_labels, cpu_labels)
    assert gpu.shape == cpu.shape and gpu.device.type == DEVICE.type
    difference = (pixels(gpu) - pixels(cpu)).abs()
    per_image = difference.flatten(1).mean(1)
    assert per_image.max() < DECODER_TOLERANCE, per_image.tolist()
