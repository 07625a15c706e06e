"""One LightningModule for every classifier in the zoo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo.plots import labelled_grid, prediction_titles
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

    The model is rebuilt from ``model`` = ``{"name": registry name, **plain arguments}``, so a
    checkpoint's hyper-parameters are enough to rebuild it through the registry alone. ``data``
    is the plain data config of the run, kept in the checkpoint so that evaluation can rebuild
    the same dataset and preprocessing.
    """

    task = "classification"

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        channels_last: bool = False,
        compile: bool = False,
        class_names: Sequence[str] | None = None,
        log_images: int = 16,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.build_network()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        num_classes = self.model.num_classes
        self.train_metrics = accuracy_metrics(num_classes).clone(prefix="train/")
        self.val_metrics = accuracy_metrics(num_classes).clone(prefix="val/")
        self.test_metrics = accuracy_metrics(num_classes).clone(prefix="test/")

    def loss(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_loss(
            outputs, targets, self.hparams.label_smoothing, self.hparams.aux_loss_weight
        )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        loss, logits = self.loss(self(images), targets)
        self.train_metrics(logits, targets)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True, batch_size=len(targets))
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = F.cross_entropy(logits, targets)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics(logits, targets)
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", batch_size=len(targets))
        self.log_dict(metrics, prog_bar=stage == "val", batch_size=len(targets))
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, "val")
        if batch_idx == 0:
            self._log_prediction_grid(batch[0], logits.argmax(dim=1), batch[1])

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_prediction_grid(
        self, images: torch.Tensor, preds: torch.Tensor, targets: torch.Tensor
    ) -> None:
        count = self.hparams.log_images
        if count <= 0 or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            return
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                # ImageNet subsets know their names only once the datamodule is set up.
                names = self.hparams.class_names or getattr(
                    self.trainer.datamodule, "class_names", None
                )
                titles, colors = prediction_titles(preds[:count], targets[:count], names)
                figure = labelled_grid(images[:count], titles, colors)
                logger.experiment.add_figure("val/predictions", figure, self.global_step)
                plt.close(figure)
