"""MixUp (Zhang et al. 2018) and CutMix (Yun et al. 2019) of training batches, on the device,
through torchvision's v2 transforms.

Each training batch gets MixUp with probability ``task.mixing.mixup_prob``, else CutMix with
probability ``task.mixing.cutmix_prob``, else stays as it is (``v2.RandomChoice``). Mixed
batches carry soft targets, which ``F.cross_entropy`` takes as class probabilities, label
smoothing included; the training accuracy is still counted on the batch's own (hard) labels.
All draws come from torch's global RNG, which the exact resume restores (zoo.training.resume).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option

ALPHA = "a number >= 0 (0: off)"
PROBABILITY = "a probability in [0, 1]"


@dataclass
class MixingOptions(Schema):
    """``task.mixing`` of classifiers: alpha of each method's Beta(alpha, alpha) mixing ratio
    (0: off), and the probability that a batch gets it (the two sum to <= 1)."""

    mixup_alpha: float = option(0.0, ge=0, what=ALPHA)
    mixup_prob: float = option(0.5, ge=0, le=1, what=PROBABILITY)
    cutmix_alpha: float = option(0.0, ge=0, what=ALPHA)
    cutmix_prob: float = option(0.5, ge=0, le=1, what=PROBABILITY)

    @property
    def enabled(self) -> bool:
        """Whether any batch can get mixed."""
        return (self.mixup_alpha > 0 and self.mixup_prob > 0) or (
            self.cutmix_alpha > 0 and self.cutmix_prob > 0
        )

    def check(self, key: str) -> None:
        mixup = self.mixup_prob if self.mixup_alpha > 0 else 0
        cutmix = self.cutmix_prob if self.cutmix_alpha > 0 else 0
        if mixup + cutmix > 1 + 1e-9:
            raise ConfigError(
                f"{key}.mixup_prob + {key}.cutmix_prob must be <= 1 (a batch gets one of them at "
                f"most), got {self.mixup_prob} + {self.cutmix_prob}"
            )


class BatchMixing:
    """``(images, labels) -> (images, targets)`` for a training batch on any device; targets are
    the labels (no mixing drawn) or soft (N, num_classes) class probabilities."""

    def __init__(self, num_classes: int, options: MixingOptions) -> None:
        choices: list[tuple[v2.Transform, float]] = []
        if options.mixup_alpha > 0:
            mixup = v2.MixUp(alpha=options.mixup_alpha, num_classes=num_classes)
            choices.append((mixup, options.mixup_prob))
        if options.cutmix_alpha > 0:
            cutmix = v2.CutMix(alpha=options.cutmix_alpha, num_classes=num_classes)
            choices.append((cutmix, options.cutmix_prob))
        rest = 1.0 - sum(p for _, p in choices)
        if rest > 1e-9:
            choices.append((v2.Identity(), rest))
        self.enabled = options.enabled
        transforms, probabilities = zip(*choices, strict=True)
        self.choice = v2.RandomChoice(list(transforms), p=list(probabilities))

    def __call__(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.choice(images, labels)
