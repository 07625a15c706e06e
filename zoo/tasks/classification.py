"""One LightningModule for every classifier in the zoo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo.core.plots import labelled_grid, prediction_titles
from zoo.tasks.base import ZooTask

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet (Szegedy 2015): auxiliary losses weighted by 0.3


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """top-1, plus top-5 where there are more than 5 classes."""
    metrics = {"acc": MulticlassAccuracy(num_classes, top_k=1, average="micro")}
    if num_classes > 5:
        metrics["acc_top5"] = MulticlassAccuracy(num_classes, top_k=5, average="micro")
    return MetricCollection(metrics)


def classification_loss(
    outputs: Any,
    targets: torch.Tensor,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = AUX_LOSS_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, main logits); auxiliary heads (GoogLeNet in training) add weighted losses."""
    if isinstance(outputs, torch.Tensor):
        return F.cross_entropy(outputs, targets, label_smoothing=label_smoothing), outputs
    logits, *aux = outputs
    loss = F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
    for aux_logits in aux:
        if aux_logits is not None:
            aux_loss = F.cross_entropy(aux_logits, targets, label_smoothing=label_smoothing)
            loss = loss + aux_loss_weight * aux_loss
    return loss, logits


class ClassificationModule(ZooTask):
    """Cross-entropy (with optional label smoothing) over any registered classifier.

    Logs ``{split}/loss``, ``{split}/acc`` and, with more than 5 classes, ``{split}/acc_top5``;
    ``test_step`` returns the logits, for the evaluation callbacks (zoo.evaluation.reports).
    Each validation epoch, TensorBoard gets ``val/predictions`` for ``log_images`` images.
    """

    task = "classification"

    def __init__(self, aux_loss_weight: float = AUX_LOSS_WEIGHT, **shared: Any) -> None:
        """``aux_loss_weight``: GoogLeNet's auxiliary losses' weight; ``shared``: ZooTask's."""
        super().__init__(**shared)

    def metrics(self, num_classes: int) -> MetricCollection:
        return accuracy_metrics(num_classes)

    def loss(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_loss(
            outputs, targets, self.hparams.label_smoothing, self.hparams.aux_loss_weight
        )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        loss, logits = self.loss(self(images), targets)
        self.log_split("train", loss, logits, targets)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        self.log_split(stage, F.cross_entropy(logits, targets), logits, targets)
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, "val")
        if batch_idx == 0 and self.wants_figures():
            count = self.hparams.log_images
            preds, targets = logits[:count].argmax(dim=1), batch[1][:count]
            titles, colors = prediction_titles(preds, targets, self.names())
            self.log_figure("val/predictions", labelled_grid(batch[0][:count], titles, colors))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Class probabilities of the batch's images."""
        return self(batch[0]).float().softmax(dim=1)
