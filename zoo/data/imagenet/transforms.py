"""ImageNet preprocessing: the training augmentation, the evaluation resize and centre crop
(both per image, on uint8), and the normalisation, batched on the device."""

from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation resizes to 256 for a 224 crop (torchvision's reference); other sizes keep the ratio.
CROP_RATIO = 224 / 256


def eval_resize(image_size: int) -> int:
    """256 for 224 (torchvision's reference), scaled in proportion for other crop sizes."""
    return round(image_size / CROP_RATIO)


def train_transform(image_size: int, color_jitter: float = 0.0) -> v2.Compose:
    """Per-image training augmentation, uint8 (3, H, W) -> uint8 (3, S, S), on any device."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps)


def eval_transform(image_size: int) -> v2.Compose:
    """Per-image evaluation preprocessing: shorter side to eval_resize, then a centre crop."""
    return v2.Compose(
        [v2.Resize(eval_resize(image_size), antialias=True), v2.CenterCrop(image_size)]
    )


def normalize() -> v2.Compose:
    """Batched on the device: uint8 (N, 3, S, S) -> float, ImageNet mean/std."""
    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
