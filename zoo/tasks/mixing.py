"""MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training batches, on the device,
through torchvision's v2 transforms.

Each training batch gets MixUp with probability ``mixup_prob``, else CutMix with probability
``cutmix_prob``, else stays as it is (``v2.RandomChoice``). Mixed batches carry soft targets,
which ``F.cross_entropy`` takes as class probabilities, label smoothing included; the training
accuracy is still counted on the batch's own (hard) labels. All draws come from torch's global
RNG, which the exact resume restores (zoo.training.resume).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torchvision.transforms import v2

# The task: options (configs/train.yaml) that turn mixing on.
ALPHAS = ("mixup_alpha", "cutmix_alpha")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_mixing_options(
    mixup_alpha: float, mixup_prob: float, cutmix_alpha: float, cutmix_prob: float
) -> None:
    """ValueError naming the task. key of a value out of range."""
    for key, value in (("mixup_alpha", mixup_alpha), ("cutmix_alpha", cutmix_alpha)):
        if not _number(value) or value < 0:
            raise ValueError(f"task.{key} must be a number >= 0 (0: off), got {value!r}")
    for key, value in (("mixup_prob", mixup_prob), ("cutmix_prob", cutmix_prob)):
        if not _number(value) or not 0 <= value <= 1:
            raise ValueError(f"task.{key} must be a probability in [0, 1], got {value!r}")
    total = (mixup_prob if mixup_alpha > 0 else 0) + (cutmix_prob if cutmix_alpha > 0 else 0)
    if total > 1 + 1e-9:
        raise ValueError(
            f"task.mixup_prob + task.cutmix_prob must be <= 1 (a batch gets one of them at "
            f"most), got {mixup_prob} + {cutmix_prob}"
        )


def refuse_for_segmentation(options: Mapping[str, Any], task: str) -> None:
    """ValueError where mixing is asked of a task it does not fit: MixUp and CutMix mix one
    label per image, and a mask's pixels would need mixing alike."""
    asked = [key for key in ALPHAS if _number(options.get(key)) and options[key] > 0]
    if asked and task != "classification":
        raise ValueError(
            f"task.{asked[0]}={options[asked[0]]}: MixUp and CutMix are for classification; "
            f"this is a {task} model (set task.mixup_alpha=0 task.cutmix_alpha=0)"
        )


class BatchMixing:
    """``(images, labels) -> (images, targets)`` for a training batch on any device; targets are
    the labels (no mixing drawn) or soft (N, num_classes) class probabilities."""

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        mixup_prob: float = 0.5,
        cutmix_alpha: float = 0.0,
        cutmix_prob: float = 0.5,
    ) -> None:
        check_mixing_options(mixup_alpha, mixup_prob, cutmix_alpha, cutmix_prob)
        choices: list[tuple[v2.Transform, float]] = []
        if mixup_alpha > 0:
            choices.append((v2.MixUp(alpha=mixup_alpha, num_classes=num_classes), mixup_prob))
        if cutmix_alpha > 0:
            choices.append((v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes), cutmix_prob))
        rest = 1.0 - sum(p for _, p in choices)
        if rest > 1e-9:
            choices.append((v2.Identity(), rest))
        self.enabled = any(p > 0 for t, p in choices if not isinstance(t, v2.Identity))
        transforms, probabilities = zip(*choices, strict=True)
        self.choice = v2.RandomChoice(list(transforms), p=list(probabilities))

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choice(images, labels)
