"""ImageNet preprocessing: the training augmentation (random resized crop, flip, optional
colour jitter, an automatic augmentation policy and random erasing), the evaluation resize and
centre crop (both per image, on uint8, in a DataLoader worker or on the device), and the
normalisation, batched on the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Evaluation resizes to 256 for a 224 crop (torchvision's reference); other sizes keep the ratio.
CROP_RATIO = 224 / 256


def eval_resize(image_size: int) -> int:
    """256 for 224 (torchvision's reference), scaled in proportion for other crop sizes."""
    return round(image_size / CROP_RATIO)


# data.auto_augment: the policies of torchvision's references (--auto-augment), with their
# settings there: bilinear interpolation, RandAugment's magnitude 9 of 31, AugMix's severity 3.
AUTO_AUGMENT = {
    "autoaugment": lambda: v2.AutoAugment(  # Cubuk et al. 2019, the ImageNet policy
        v2.AutoAugmentPolicy.IMAGENET, interpolation=InterpolationMode.BILINEAR
    ),
    "randaugment": lambda: v2.RandAugment(  # Cubuk et al. 2020
        num_ops=2, magnitude=9, interpolation=InterpolationMode.BILINEAR
    ),
    "trivialaugment": lambda: v2.TrivialAugmentWide(  # Müller & Hutter 2021
        interpolation=InterpolationMode.BILINEAR
    ),
    "augmix": lambda: v2.AugMix(severity=3, interpolation=InterpolationMode.BILINEAR),
}
# Erased pixels take the mean colour: after normalisation they are 0, as in torchvision's
# reference, which erases after normalising (here erasing stays on uint8, before it).
ERASE_VALUE = [round(255 * m) for m in IMAGENET_MEAN]


def check_augmentation(auto_augment: str | None, random_erasing: float) -> None:
    """ValueError naming the data. key of an unknown policy or a probability out of range."""
    if auto_augment is not None and auto_augment not in AUTO_AUGMENT:
        raise ValueError(
            f"data.auto_augment must be null or one of {sorted(AUTO_AUGMENT)}, got {auto_augment!r}"
        )
    number = isinstance(random_erasing, int | float) and not isinstance(random_erasing, bool)
    if not number or not 0 <= random_erasing <= 1:
        raise ValueError(
            f"data.random_erasing must be a probability in [0, 1], got {random_erasing!r}"
        )


def train_transform(
    image_size: int,
    color_jitter: float = 0.0,
    auto_augment: str | None = None,
    random_erasing: float = 0.0,
) -> v2.Compose:
    """Per-image training augmentation, uint8 (3, H, W) -> uint8 (3, S, S), on any device:
    torchvision's reference order (crop, flip, policy; erasing last)."""
    check_augmentation(auto_augment, random_erasing)
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    if auto_augment is not None:
        steps.append(AUTO_AUGMENT[auto_augment]())
    if random_erasing > 0:
        steps.append(v2.RandomErasing(p=random_erasing, value=ERASE_VALUE))
    return v2.Compose(steps)


def eval_transform(image_size: int, resize_size: int | None = None) -> v2.Compose:
    """Per-image evaluation preprocessing: shorter side to ``resize_size`` (None:
    eval_resize), then a centre crop."""
    resize = eval_resize(image_size) if resize_size is None else resize_size
    return v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])


def normalize(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Batched on the device: uint8 (N, C, S, S) -> float, normalised (ImageNet's mean/std by
    default; pretrained weights may name others)."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
