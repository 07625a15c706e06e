"""What ``evaluate.py`` reports beyond the metrics the task module's own test loop logs: callbacks
on that one loop, each adding its part of the report and its figures.

- ``Throughput``: images/s over the whole loop, end to end (an attack's time included);
- ``PerClass``: the confusion matrix and each class's accuracy (classifiers) or IoU and Dice
  (segmentation);
- ``WorstSamples``: the samples with the highest loss, drawn;
- ``zoo.evaluation.attacks.FGSMRobustness``: accuracy under the fast gradient sign attack.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torchmetrics import Metric
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
)

from zoo.core.plots import labelled_grid, segmentation_overlays

# Confusion matrices larger than this are kept in metrics.json but not drawn or printed.
MAX_DRAWN_CLASSES = 30


class Report(pl.Callback):
    """A callback on the test loop that adds to the evaluation report and its figures."""

    # TensorBoard tag of the figures; None: the split's name.
    tag: str | None = None

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: torch.Tensor,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.update(trainer, pl_module, outputs, batch)

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        """One test batch (on the device, as the step saw it) and the logits it returned."""

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        return {}

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        return {}

    def scalars(self) -> dict[str, float]:
        """Scalars for the loggers, under their full tag, beyond the report's top-level numbers
        (which are logged under the split's name)."""
        return {}


class Throughput(Report):
    """Images per second over the test loop: transfer, preprocessing, forward and metrics, and
    any attack on the loop's batches (``with_attack``): the figure is then reported as
    ``images_per_sec_attack_included``, not ``images_per_sec``, so that it is never read as
    the clean pass's speed.

    By hand because Lightning's ThroughputMonitor reports over a sliding window of batches, and
    only once the window is full: a short split would report nothing.
    """

    def __init__(self, with_attack: bool = False) -> None:
        self.key = "images_per_sec_attack_included" if with_attack else "images_per_sec"
        self.samples = 0
        self.seconds = 0.0
        self._started = 0.0

    @staticmethod
    def _synchronize(device: torch.device) -> None:
        # CUDA runs asynchronously: without this the clock stops before the GPU does.
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples = 0
        self._synchronize(pl_module.device)
        self._started = time.perf_counter()

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        self.samples += len(batch[0])

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._synchronize(pl_module.device)
        self.seconds = time.perf_counter() - self._started

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            "samples": self.samples,
            self.key: self.samples / self.seconds if self.seconds else None,
        }


class PerClass(Report):
    """The confusion matrix of the split (rows: true class, columns: predicted) and, per true
    class, its accuracy and sample count (classifiers), or its IoU, Dice and pixel count
    (segmentation, where every pixel is a sample). Dice is the task module's own
    ``test/dice_<class>``."""

    def __init__(self, num_classes: int, task: str) -> None:
        self.task = task
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.per_class: Metric = (
            MulticlassAccuracy(num_classes, average="none")
            if task == "classification"
            # A class neither in the truth nor predicted has no IoU: nan, reported as None.
            else MulticlassJaccardIndex(num_classes, average="none", zero_division=float("nan"))
        )

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for metric in (self.confusion, self.per_class):
            metric.to(pl_module.device)
            metric.reset()

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        preds = logits.argmax(dim=1)
        self.confusion.update(preds, batch[1])
        self.per_class.update(preds, batch[1])

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        matrix = self.confusion.compute().cpu()
        counts = matrix.sum(dim=1).tolist()
        values = self.per_class.compute().cpu().tolist()
        per_class: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(class_names):
            if self.task == "classification":
                acc = values[i] if counts[i] else None
                per_class[name] = {"acc": acc, "samples": int(counts[i])}
            else:
                dice = trainer.callback_metrics.get(f"test/dice_{name}")
                per_class[name] = {
                    "iou": None if values[i] != values[i] else values[i],  # nan: no IoU
                    "dice": None if dice is None else float(dice),
                    "pixels": int(counts[i]),
                }
        return {"per_class": per_class, "confusion_matrix": matrix.tolist()}

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        if len(class_names) > MAX_DRAWN_CLASSES:
            return {}
        # Pixel counts are too large to read: segmentation's rows are drawn normalised.
        normalize = self.task != "classification"
        return {"confusion_matrix": confusion_figure(self.confusion, class_names, normalize)}


class WorstSamples(Report):
    """The ``count`` samples with the highest loss: misclassified images for classifiers
    (``worst_misclassified``), the worst-segmented images for segmentation (``worst_segmented``,
    the first ``shown_rows`` drawn)."""

    shown_rows = 6

    def __init__(self, count: int, task: str, num_classes: int) -> None:
        self.count = count
        self.task = task
        self.num_classes = num_classes
        self.worst: dict[str, torch.Tensor] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.worst = {}

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        if self.count <= 0:
            return
        images, targets = batch[0], batch[1]
        logits = logits.float()
        losses = F.cross_entropy(logits, targets, reduction="none")
        preds = logits.argmax(dim=1)
        if self.task == "classification":
            wrong = preds != targets
            confidence = logits[wrong].softmax(dim=1).amax(dim=1)
            self._keep(
                losses[wrong],
                images=images[wrong],
                preds=preds[wrong],
                confidence=confidence,
                targets=targets[wrong],
            )
        else:
            self._keep(losses.mean(dim=(1, 2)), images=images, targets=targets, preds=preds)

    def _keep(self, losses: torch.Tensor, **samples: torch.Tensor) -> None:
        """Keep, across batches, the ``count`` samples with the highest ``losses``."""
        if not len(losses):
            return
        found = {"loss": losses, **samples}
        found = {key: value.detach().cpu() for key, value in found.items()}
        if self.worst:
            found = {key: torch.cat([self.worst[key], value]) for key, value in found.items()}
        keep = found["loss"].topk(min(self.count, len(found["loss"]))).indices
        self.worst = {key: value[keep] for key, value in found.items()}

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        worst = self.worst
        if not worst:
            return {}
        if self.task != "classification":
            n = self.shown_rows
            figure = segmentation_overlays(
                worst["images"][:n],
                worst["targets"][:n],
                worst["preds"][:n],
                self.num_classes,
                class_names,
            )
            return {"worst_segmented": figure}
        titles = [
            f"pred {class_names[p]} {c:.0%} / true {class_names[t]}"
            for p, c, t in zip(
                worst["preds"].tolist(),
                worst["confidence"].tolist(),
                worst["targets"].tolist(),
                strict=True,
            )
        ]
        return {
            "worst_misclassified": labelled_grid(worst["images"], titles, ["red"] * len(titles))
        }


def confusion_figure(
    confusion: MulticlassConfusionMatrix, class_names: Sequence[str], normalize: bool = False
) -> Figure:
    """torchmetrics' confusion-matrix plot; ``normalize``: each true class's row sums to 1."""
    matrix = confusion.compute().cpu()
    if normalize:
        matrix = matrix.float() / matrix.sum(dim=1, keepdim=True).clamp_min(1)
    # torchmetrics writes each cell's value at a fixed 15 pt: size the cells to fit it.
    side = max(5.0, 0.75 * len(class_names) + 1.5)
    figure, ax = plt.subplots(figsize=(side, side), constrained_layout=True)
    confusion.plot(val=matrix, ax=ax, add_text=len(class_names) <= 20, labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return figure


def metric_values(results: Mapping[str, float]) -> dict[str, float]:
    """The task module's logged test metrics, unprefixed (``test/acc`` -> ``acc``); the per-class
    Dice entries belong to ``per_class``."""
    return {
        key.removeprefix("test/"): float(value)
        for key, value in results.items()
        if not key.startswith("test/dice_")
    }
