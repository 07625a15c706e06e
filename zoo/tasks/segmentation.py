"""One LightningModule for the zoo's segmentation networks (U-Net)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex
from torchmetrics.segmentation import DiceScore

from zoo.core.plots import segmentation_overlays
from zoo.core.schema import option
from zoo.tasks.base import TaskOptions, ZooTask

LOSSES = ("ce", "dice", "ce+dice")


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - the soft Dice score of softmax(logits) against the labels, averaged over the classes
    present in the batch.

    Written here because none of our libraries has a differentiable multiclass Dice:
    torchmetrics' DiceScore is a metric on hard labels, torchvision has none.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    one_hot = F.one_hot(targets, num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    cardinality = probs.sum(dims) + one_hot.sum(dims)
    dice = 2 * intersection / cardinality.clamp_min(1e-7)
    # Classes absent from the batch have no Dice to learn; their false positives still lower
    # the Dice of the classes they were taken from.
    present = one_hot.sum(dims) > 0
    return 1 - dice[present].mean()


def segmentation_metrics(num_classes: int) -> MetricCollection:
    """Mean IoU over the classes (from the dataset's pixel confusion matrix, as in PASCAL VOC and
    Cityscapes), and pixel accuracy."""
    return MetricCollection(
        {
            "miou": MulticlassJaccardIndex(num_classes, average="macro"),
            "pixel_acc": MulticlassAccuracy(num_classes, average="micro"),
        }
    )


def dice_per_class(num_classes: int) -> DiceScore:
    """Each class's Dice over the whole split (not averaged image by image)."""
    return DiceScore(num_classes, average="none", aggregation_level="global", input_format="index")


@dataclass
class SegmentationOptions(TaskOptions):
    """zoo/configs/task/segmentation.yaml: the shared options, the loss (one of LOSSES) and the
    Dice term's weight in ``ce+dice``; four overlays a validation by default."""

    loss: str = option("ce+dice", choices=LOSSES, what=f"one of {LOSSES}")
    dice_weight: float = option(1.0, ge=0)
    log_images: int = option(4, ge=0)


class SegmentationModule(ZooTask):
    """Per-pixel cross-entropy, soft Dice, or both, over any registered segmentation network.

    Logs ``{split}/loss``, ``{split}/miou`` and ``{split}/pixel_acc``; for val and test also
    ``{split}/dice`` (the mean over classes) and ``{split}/dice_<class name>``; ``test_step``
    returns the logits, for the evaluation callbacks (zoo.evaluation.reports). Each validation
    epoch, TensorBoard gets ``val/overlays``: input | truth | prediction for ``log_images``
    images.
    """

    task = "segmentation"
    options_type = SegmentationOptions
    options: SegmentationOptions

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        options: SegmentationOptions | None = None,
    ) -> None:
        super().__init__(model, optimizer, scheduler, data, options)
        num_classes = self.model.num_classes
        self.val_dice = dice_per_class(num_classes)
        self.test_dice = dice_per_class(num_classes)

    def metrics(self, num_classes: int) -> MetricCollection:
        return segmentation_metrics(num_classes)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        terms = self.options.loss.split("+")
        loss = logits.new_zeros((), dtype=torch.float32)
        if "ce" in terms:
            loss = F.cross_entropy(logits, masks, label_smoothing=self.options.label_smoothing)
        if "dice" in terms:
            loss = loss + self.options.dice_weight * soft_dice_loss(logits, masks)
        return loss

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, masks = batch
        logits = self(images)
        loss = self.loss(logits, masks)
        self.log_split("train", loss, logits.argmax(dim=1), masks)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, masks = batch
        logits = self(images)
        preds = logits.argmax(dim=1)
        self.log_split(stage, self.loss(logits, masks), preds, masks)
        (self.val_dice if stage == "val" else self.test_dice).update(preds, masks)
        return logits

    def _log_dice(self, stage: str) -> None:
        dice_metric = self.val_dice if stage == "val" else self.test_dice
        scores = dice_metric.compute().reshape(-1)
        dice_metric.reset()
        # Classes absent from both truth and prediction have no Dice (nan): left out of the mean.
        self.log(f"{stage}/dice", scores.nanmean())
        for name, score in zip(self.names(), scores, strict=True):
            if not torch.isnan(score):
                self.log(f"{stage}/dice_{name}", score)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, "val")
        if batch_idx == 0 and self.wants_figures():
            count = self.options.log_images
            images, masks, preds = batch[0][:count], batch[1][:count], logits[:count].argmax(1)
            figure = segmentation_overlays(
                images, masks, preds, self.model.num_classes, self.names()
            )
            self.log_figure("val/overlays", figure)

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self._log_dice("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        self._log_dice("test")
