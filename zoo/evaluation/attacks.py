"""Adversarial robustness: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015).

FGSM moves every pixel by ``eps`` in the direction that increases the loss:
``x_adv = clip(x + eps * sign(grad_x loss), 0, 1)``. ``eps`` is in pixel units (images in
[0, 1], 0.1 = 25.5 grey levels). The networks see normalised inputs, so the step and the clip
happen in pixel space and the result is normalised again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn
from torchvision.transforms import v2

from zoo.core.plots import labelled_grid
from zoo.evaluation.reports import Report


def pixel_normalization(
    datamodule: pl.LightningDataModule, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (1, C, 1, 1), of the ``v2.Normalize`` that ends the datamodule's batch
    transform (``transform`` for MNIST, ``normalize`` for ImageNet); none: mean 0, std 1."""
    steps: list[Any] = []
    for name in ("transform", "normalize"):
        transform = getattr(datamodule, name, None)
        steps += getattr(transform, "transforms", [transform])
    norms = [step for step in steps if isinstance(step, v2.Normalize)]
    mean, std = (norms[-1].mean, norms[-1].std) if norms else ([0.0], [1.0])

    def shaped(values: Sequence[float]) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32).expand(channels).view(1, -1, 1, 1)

    return shaped(mean), shaped(std)


def fgsm(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    eps: Sequence[float],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> list[torch.Tensor]:
    """One normalised adversarial batch per ``eps``, from a single gradient of the loss."""
    with torch.enable_grad():
        inputs = images.detach().requires_grad_(True)
        # A sum, not a mean: only the sign matters, and a mean's tiny gradients can underflow
        # to zero in half precision.
        loss = F.cross_entropy(model(inputs).float(), targets, reduction="sum")
        (grad,) = torch.autograd.grad(loss, inputs)
    step = grad.sign()
    pixels = images * std + mean
    # Clip to [0, 1]; a pixel that resampling left a rounding error outside stays where it is,
    # so that eps = 0 gives back exactly the clean batch.
    low, high = pixels.clamp(max=0.0), pixels.clamp(min=1.0)
    return [
        images + (torch.minimum(torch.maximum(pixels + e * step, low), high) - pixels) / std
        for e in eps
    ]


class FGSMRobustness(Report):
    """Accuracy of a classifier under FGSM at each ``eps``, on the test loop's own batches, and a
    few examples to look at (``fgsm_examples``, ``fgsm_accuracy``). Needs a Trainer built with
    ``inference_mode=False``: the attack takes gradients with respect to the images."""

    tag = "fgsm"

    def __init__(
        self,
        eps: Sequence[float],
        mean: torch.Tensor,
        std: torch.Tensor,
        examples: int = 8,
    ) -> None:
        self.eps = [float(e) for e in eps]
        self.mean, self.std = mean, std
        self.examples = examples
        self.correct = torch.zeros(len(self.eps), dtype=torch.long)
        self.samples = 0
        self.shown: dict[str, torch.Tensor] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.correct = torch.zeros(len(self.eps), dtype=torch.long, device=pl_module.device)
        self.mean, self.std = self.mean.to(pl_module.device), self.std.to(pl_module.device)
        self.samples = 0
        self.shown = {}

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        images, targets = batch[0], batch[1]
        # Under the precision the clean forward pass ran at (bf16 autocast, say): Lightning
        # applies it to the test step, not to callbacks.
        with trainer.precision_plugin.forward_context():
            adversarial = fgsm(module, images, targets, self.eps, self.mean, self.std)
            preds = torch.stack([module(x).argmax(dim=1) for x in adversarial])
        self.correct += (preds == targets).sum(dim=1)
        self.samples += len(targets)
        if not self.shown and self.examples > 0:
            n = self.examples
            self.shown = {
                "clean": images[:n].detach().cpu(),
                "adversarial": adversarial[-1][:n].detach().cpu(),
                "clean_preds": logits[:n].argmax(dim=1).cpu(),
                "adversarial_preds": preds[-1, :n].cpu(),
                "targets": targets[:n].cpu(),
            }

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        accuracy = (self.correct.float() / max(1, self.samples)).tolist()
        return {"fgsm": {"eps": self.eps, "acc": accuracy, "samples": self.samples}}

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        accuracy = (self.correct.float() / max(1, self.samples)).tolist()
        return {
            "fgsm_examples": self.examples_figure(class_names),
            "fgsm_accuracy": accuracy_figure(self.eps, accuracy),
        }

    def examples_figure(self, class_names: Sequence[str]) -> Figure | None:
        """Rows: clean images, the same at the largest eps, and the perturbation (grey = 0)."""
        if not self.shown:
            return None
        shown, eps = self.shown, self.eps[-1]
        mean, std = self.mean.cpu(), self.std.cpu()
        clean = shown["clean"].float() * std + mean
        adversarial = shown["adversarial"].float() * std + mean
        # A fixed scale, unlike labelled_grid's per-image one: the sign pattern reads as +/-.
        difference = 0.5 + (adversarial - clean) / (2 * max(eps, 1e-8))
        columns = len(clean)

        def titled(preds: torch.Tensor, label: str) -> tuple[list[str], list[str]]:
            titles = [f"{label}{class_names[p]}" for p in preds.tolist()]
            ok = (preds == shown["targets"]).tolist()
            return titles, ["green" if right else "red" for right in ok]

        clean_titles, clean_colors = titled(shown["clean_preds"], "clean: ")
        adv_titles, adv_colors = titled(shown["adversarial_preds"], f"eps {eps:g}: ")
        figure = labelled_grid(
            torch.cat([clean.clamp(0, 1), adversarial.clamp(0, 1), difference.clamp(0, 1)]),
            clean_titles + adv_titles + ["perturbation"] * columns,
            clean_colors + adv_colors + ["black"] * columns,
            columns=columns,
            rescale=False,
        )
        figure.suptitle(f"FGSM, eps = {eps:g} (pixels in [0, 1])", fontsize=10)
        figure.tight_layout(rect=(0, 0, 1, 0.95))
        return figure


def accuracy_figure(eps: Sequence[float], accuracy: Sequence[float]) -> Figure:
    """Accuracy against eps: the lecture's robustness curve."""
    figure, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(list(eps), list(accuracy), marker="o")
    ax.set_xlabel("eps (pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("FGSM")
    figure.tight_layout()
    return figure
