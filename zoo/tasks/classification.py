"""One LightningModule for every classifier in the zoo."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo.core.plots import labelled_grid, prediction_titles
from zoo.tasks.adversarial import Perturbation, logits_of, pixel_normalization
from zoo.tasks.base import ZooTask
from zoo.tasks.mixing import BatchMixing

AUX_LOSS_WEIGHT = 0.3  # GoogLeNet (Szegedy 2015): auxiliary losses weighted by 0.3


class TopKAccuracy(MulticlassAccuracy):
    """``MulticlassAccuracy(num_classes, top_k=k, average="micro")``, fed the k best classes
    only: a hit counts as the target predicted, a miss as the best class.

    torchmetrics' own top-k path builds (N, C) one-hot tensors of the predictions and targets
    per batch: 1.5 ms at 128 x 1000 on two CPU cores, every training step. This one compares
    (N, k) indices. The value is the same (tests/tasks/test_metrics.py)."""

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


class ClassificationModule(ZooTask):
    """Cross-entropy (with optional label smoothing) over any registered classifier.

    Logs ``{split}/loss``, ``{split}/acc`` and, with more than 5 classes, ``{split}/acc_top5``;
    ``test_step`` returns the logits, for the evaluation callbacks (zoo.evaluation.reports).
    Each validation epoch, TensorBoard gets ``val/predictions`` for ``log_images`` images.

    Adversarial training (``adversarial``: fgsm or pgd, zoo.tasks.adversarial) minimises
    Goodfellow et al.'s ``alpha * J(x) + (1 - alpha) * J(x_adv)``, the attack made afresh each
    step in pixel units, and logs ``val/robust_acc``: accuracy under PGD with
    ``adversarial_val_steps`` steps at the same eps, on the first ``adversarial_val_batches``
    validation batches (null: all).
    """

    task = "classification"

    def __init__(
        self,
        aux_loss_weight: float = AUX_LOSS_WEIGHT,
        adversarial: str | None = None,
        adversarial_eps: float = 0.1,
        adversarial_steps: int = 7,
        adversarial_step_size: float | None = None,
        adversarial_norm: str = "linf",
        adversarial_random_start: bool = True,
        adversarial_alpha: float = 0.5,
        adversarial_val_steps: int = 10,
        adversarial_val_batches: int | None = None,
        mixup_alpha: float = 0.0,
        mixup_prob: float = 0.5,
        cutmix_alpha: float = 0.0,
        cutmix_prob: float = 0.5,
        **shared: Any,
    ) -> None:
        """``aux_loss_weight``: GoogLeNet's auxiliary losses' weight; ``adversarial*``: the
        adversarial training (configs/train.yaml's ``task:`` block); ``mixup_*``, ``cutmix_*``:
        MixUp and CutMix of the training batches (zoo.tasks.mixing); ``shared``: ZooTask's."""
        super().__init__(**shared)
        mixing = BatchMixing(
            self.model.num_classes, mixup_alpha, mixup_prob, cutmix_alpha, cutmix_prob
        )
        self.mixing = mixing if mixing.enabled else None
        self.perturbation = self.robust_validation = None
        if adversarial is not None:
            self.perturbation = Perturbation(
                adversarial,
                adversarial_eps,
                adversarial_steps,
                adversarial_step_size,
                adversarial_norm,
                adversarial_random_start,
            )
            self.robust_validation = Perturbation(
                "pgd",
                adversarial_eps,
                adversarial_val_steps,
                None,
                adversarial_norm,
                True,
                prefix="task.adversarial_val",
            )
            mix = isinstance(adversarial_alpha, int | float) and 0 <= adversarial_alpha <= 1
            if not mix or isinstance(adversarial_alpha, bool):
                raise ValueError(
                    f"task.adversarial_alpha must be a number in [0, 1], got {adversarial_alpha!r}"
                )
            batches = adversarial_val_batches
            if batches is not None and (not isinstance(batches, int) or batches < 1):
                raise ValueError(
                    f"task.adversarial_val_batches must be an integer >= 1 or null, got {batches!r}"
                )
            self.val_robust_acc = MulticlassAccuracy(self.model.num_classes, average="micro")
        self._pixel_normalization: tuple[torch.Tensor, torch.Tensor] | None = None

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
            datamodule = self._trainer.datamodule if self._trainer is not None else None
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
        alpha = self.hparams.adversarial_alpha
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
        limit = self.hparams.adversarial_val_batches
        if self.robust_validation is not None and (limit is None or batch_idx < limit):
            self.log_robust_accuracy(*batch)
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
