"""One LightningModule for every classifier in the zoo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo.core.lightning import attached_trainer
from zoo.core.plots import labelled_grid, prediction_titles
from zoo.core.schema import option
from zoo.tasks.adversarial import AdversarialOptions, Perturbation, logits_of, pixel_normalization
from zoo.tasks.base import TaskOptions, ZooTask
from zoo.tasks.mixing import BatchMixing, MixingOptions

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet (Szegedy 2015): auxiliary losses weighted by 0.3


class TopKAccuracy(MulticlassAccuracy):
    """``MulticlassAccuracy(num_classes, top_k=k, average="micro")``, fed the k best classes
    only: a hit counts as the target predicted, a miss as the best class.

    torchmetrics' own top-k path builds (N, C) one-hot tensors of the predictions and targets
    per batch: 1.5 ms at 128 x 1000 on two CPU cores, every training step. This one compares
    (N, k) indices. The value is the same (tests/tasks/test_classification.py)."""

    def __init__(self, num_classes: int, top_k: int) -> None:
        # validate_args=False: the loss has taken the same targets first, and the checks cost
        # a torch.unique (a host sync on a GPU) per batch.
        super().__init__(num_classes, top_k=1, average="micro", validate_args=False)
        self.k = top_k

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        best = preds.topk(self.k, dim=1).indices
        hit = (best == target.unsqueeze(1)).any(dim=1)
        super().update(torch.where(hit, target, best[:, 0]), target)


def accuracy_metrics(num_classes: int) -> MetricCollection:
    """top-1, plus top-5 where there are more than 5 classes."""
    metrics = {"acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)}
    if num_classes > 5:
        metrics["acc_top5"] = TopKAccuracy(num_classes, top_k=5)
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


@dataclass
class ClassificationOptions(TaskOptions):
    """zoo/configs/task/classification.yaml: the shared options, GoogLeNet's auxiliary losses'
    weight, and the ``adversarial`` (zoo.tasks.adversarial) and ``mixing`` (zoo.tasks.mixing)
    blocks."""

    aux_loss_weight: float = option(AUX_LOSS_WEIGHT, ge=0)
    adversarial: AdversarialOptions = option(default_factory=AdversarialOptions)
    mixing: MixingOptions = option(default_factory=MixingOptions)


class ClassificationModule(ZooTask):
    """Cross-entropy (with optional label smoothing) over any registered classifier.

    Logs ``{split}/loss``, ``{split}/acc`` and, with more than 5 classes, ``{split}/acc_top5``;
    ``test_step`` returns the logits, for the evaluation callbacks (zoo.evaluation.reports).
    Each validation epoch, TensorBoard gets ``val/predictions`` for ``log_images`` images.

    Adversarial training (``options.adversarial.method``: fgsm or pgd, zoo.tasks.adversarial)
    minimises Goodfellow et al.'s ``alpha * J(x) + (1 - alpha) * J(x_adv)``, the attack made
    afresh each step in pixel units, and logs ``val/robust_acc``: accuracy under PGD with
    ``val_steps`` steps at the same eps, on the first ``val_batches`` validation batches (null:
    all). ``options.mixing``: MixUp and CutMix of the training batches (zoo.tasks.mixing).
    """

    task = "classification"
    options_type = ClassificationOptions
    options: ClassificationOptions

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        options: ClassificationOptions | None = None,
    ) -> None:
        super().__init__(model, optimizer, scheduler, data, options)
        mixing, adversarial = self.options.mixing, self.options.adversarial
        self.mixing = BatchMixing(self.model.num_classes, mixing) if mixing.enabled else None
        self.perturbation = self.robust_validation = None
        if adversarial.enabled:
            self.perturbation = Perturbation.training(adversarial)
            self.robust_validation = Perturbation.validation(adversarial)
            self.val_robust_acc = MulticlassAccuracy(self.model.num_classes, average="micro")
        self._pixel_normalization: tuple[torch.Tensor, torch.Tensor] | None = None

    def metrics(self, num_classes: int) -> MetricCollection:
        return accuracy_metrics(num_classes)

    def loss(self, outputs: Any, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return classification_loss(
            outputs, targets, self.options.label_smoothing, self.options.aux_loss_weight
        )

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, targets = batch
        # Mixed batches train on soft targets; the accuracy logged stays on the hard labels.
        mixed, soft = self.mixing(images, targets) if self.mixing else (images, targets)
        loss, logits = self.loss(self(mixed), soft)
        if self.perturbation is not None:
            loss = self.adversarial_loss(loss, images, targets)
        self.log_split("train", loss, logits, targets)
        return loss

    def pixel_normalization(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The datamodule's (mean, std), read once, for attacks in pixel units."""
        if self._pixel_normalization is None:
            trainer = attached_trainer(self)
            datamodule = trainer.datamodule if trainer is not None else None
            self._pixel_normalization = pixel_normalization(datamodule, self.model.in_channels)
        mean, std = self._pixel_normalization
        return mean.to(self.device), std.to(self.device)

    def adversarial_loss(
        self, clean_loss: torch.Tensor, images: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Goodfellow et al.'s alpha * J(x) + (1 - alpha) * J(x_adv), x_adv made against the
        current weights."""
        assert self.perturbation is not None
        adversarial = self.perturbation(self, images, targets, *self.pixel_normalization())
        adversarial_loss, _ = self.loss(self(adversarial), targets)
        if self.logs_this_step():
            self.log("train/adversarial_loss", adversarial_loss, batch_size=len(targets))
        alpha = self.options.adversarial.alpha
        return alpha * clean_loss + (1 - alpha) * adversarial_loss

    def log_robust_accuracy(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        """Accuracy under the validation PGD, ``val/robust_acc``, per epoch."""
        assert self.robust_validation is not None
        adversarial = self.robust_validation(self, images, targets, *self.pixel_normalization())
        self.val_robust_acc(logits_of(self(adversarial)), targets)
        self.log("val/robust_acc", self.val_robust_acc, on_epoch=True, batch_size=len(targets))

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        self.log_split(stage, F.cross_entropy(logits, targets), logits, targets)
        return logits

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, "val")
        limit = self.options.adversarial.val_batches
        if self.robust_validation is not None and (limit is None or batch_idx < limit):
            self.log_robust_accuracy(*batch)
        if batch_idx == 0 and self.wants_figures():
            count = self.options.log_images
            preds, targets = logits[:count].argmax(dim=1), batch[1][:count]
            titles, colors = prediction_titles(preds, targets, self.names())
            self.log_figure("val/predictions", labelled_grid(batch[0][:count], titles, colors))

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Class probabilities of the batch's images."""
        return self(batch[0]).float().softmax(dim=1)
