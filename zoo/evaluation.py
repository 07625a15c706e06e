"""What ``python evaluate.py`` does: load a checkpoint as untrusted input, rebuild its dataset,
then report metrics (and robustness to FGSM), predict image files, or export to ONNX.

Evaluation is per task, keyed on the model's ``task`` attribute (``EVALUATORS``): each evaluator
is a LightningModule whose ``test_step`` accumulates metrics and whose ``report`` and ``figures``
say what it found: accuracy and a confusion matrix for classifiers; mIoU, per-class IoU and
Dice and a pixel confusion matrix for segmentation networks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo import data
from zoo.attacks import FGSMEvaluator, accuracy_figure, pixel_normalization
from zoo.checkpoints import Checkpoint, load_checkpoint
from zoo.config import CONFIG_DIR, ConfigError, to_plain, validate
from zoo.export import export_onnx
from zoo.plots import labelled_grid, segmentation_overlays
from zoo.predict import find_images, load_images, top_k
from zoo.tasks.classification import accuracy_metrics
from zoo.tasks.segmentation import segmentation_metrics
from zoo.training import instantiate_group

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")
EXPORTS = ("onnx",)
ATTACKS = ("fgsm",)
# Confusion matrices larger than this are kept in metrics.json but not drawn or printed.
MAX_DRAWN_CLASSES = 30


class Evaluator(pl.LightningModule):
    """What every task's evaluator shares: images/s over the test loop, and the samples with the
    highest loss. Subclasses update their metrics in ``test_step`` and say what they found in
    ``report`` and ``figures``."""

    def __init__(self, model: nn.Module, worst_images: int = 16) -> None:
        super().__init__()
        self.model = model
        self.worst_images = worst_images
        self.worst: dict[str, torch.Tensor] = {}
        self.samples = 0
        self.seconds = 0.0
        self._started = 0.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def _synchronize(self) -> None:
        # CUDA runs asynchronously: without this the clock stops before the GPU does.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_test_epoch_start(self) -> None:
        for module in self.modules():
            if isinstance(module, Metric | MetricCollection):
                module.reset()
        self.worst, self.samples = {}, 0
        self._synchronize()
        self._started = time.perf_counter()

    def on_test_epoch_end(self) -> None:
        self._synchronize()
        self.seconds = time.perf_counter() - self._started

    def images_per_sec(self) -> float | None:
        return self.samples / self.seconds if self.seconds else None

    def keep_worst(self, losses: torch.Tensor, **samples: torch.Tensor) -> None:
        """Keep, across batches, the ``worst_images`` samples with the highest ``losses``."""
        if self.worst_images <= 0 or not len(losses):
            return
        found = {"loss": losses, **samples}
        found = {key: value.detach().cpu() for key, value in found.items()}
        if self.worst:
            found = {key: torch.cat([self.worst[key], value]) for key, value in found.items()}
        keep = found["loss"].topk(min(self.worst_images, len(found["loss"]))).indices
        self.worst = {key: value[keep] for key, value in found.items()}

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(batch[0]).float().softmax(dim=1)

    def report(self, class_names: Sequence[str]) -> dict[str, Any]:
        raise NotImplementedError

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure]:
        raise NotImplementedError


class ClassificationEvaluator(Evaluator):
    """A classifier's metrics on one split, in one pass: loss, top-1 (and top-5 when there are
    more than 5 classes), the confusion matrix (and from it per-class accuracy), images/s, and
    the misclassified images with the highest loss."""

    def __init__(self, model: nn.Module, worst_images: int = 16) -> None:
        super().__init__(model, worst_images)
        self.accuracy = accuracy_metrics(model.num_classes)
        self.confusion = MulticlassConfusionMatrix(model.num_classes)
        self.loss = MeanMetric()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self.model(images).float()
        losses = F.cross_entropy(logits, targets, reduction="none")
        self.loss.update(losses)
        self.accuracy.update(logits, targets)
        preds = logits.argmax(dim=1)
        self.confusion.update(preds, targets)
        self.samples += len(targets)
        wrong = preds != targets
        probs = logits[wrong].softmax(dim=1)
        self.keep_worst(
            losses[wrong],
            images=images[wrong],
            preds=preds[wrong],
            confidence=probs.amax(dim=1),
            targets=targets[wrong],
        )

    def report(self, class_names: Sequence[str]) -> dict[str, Any]:
        accuracy = {key: float(value) for key, value in self.accuracy.compute().items()}
        matrix = self.confusion.compute().cpu()
        per_class = {
            name: {
                "acc": float(matrix[i, i] / matrix[i].sum()) if matrix[i].sum() else None,
                "samples": int(matrix[i].sum()),
            }
            for i, name in enumerate(class_names)
        }
        return {
            "samples": self.samples,
            "loss": float(self.loss.compute()),
            **accuracy,
            "images_per_sec": self.images_per_sec(),
            "per_class": per_class,
            "confusion_matrix": matrix.tolist(),
        }

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure]:
        figures = {}
        if len(class_names) <= MAX_DRAWN_CLASSES:
            figures["confusion_matrix"] = confusion_figure(self.confusion, class_names)
        if self.worst:
            worst = self.worst
            titles = [
                f"pred {class_names[p]} {c:.0%} / true {class_names[t]}"
                for p, c, t in zip(
                    worst["preds"].tolist(),
                    worst["confidence"].tolist(),
                    worst["targets"].tolist(),
                    strict=True,
                )
            ]
            figures["worst_misclassified"] = labelled_grid(
                worst["images"], titles, ["red"] * len(titles)
            )
        return figures


class SegmentationEvaluator(Evaluator):
    """A segmentation network's metrics on one split: mean IoU and pixel accuracy (as training
    logs them), per-class IoU and Dice and their means from the pixel confusion matrix, pixel
    cross-entropy, images/s, and the images with the highest loss."""

    shown_images = 6  # one figure row each

    def __init__(self, model: nn.Module, worst_images: int = 16) -> None:
        super().__init__(model, worst_images)
        num_classes = model.num_classes
        self.metrics = segmentation_metrics(num_classes)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.loss = MeanMetric()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        logits = self.model(images).float()
        pixel_losses = F.cross_entropy(logits, masks, reduction="none")
        preds = logits.argmax(dim=1)
        self.loss.update(pixel_losses)
        self.metrics.update(preds, masks)
        self.confusion.update(preds, masks)
        self.samples += len(masks)
        self.keep_worst(pixel_losses.mean(dim=(1, 2)), images=images, masks=masks, preds=preds)

    def report(self, class_names: Sequence[str]) -> dict[str, Any]:
        matrix = self.confusion.compute().cpu().double()
        hits, truth, predicted = matrix.diag(), matrix.sum(dim=1), matrix.sum(dim=0)
        # Over the whole split (not image by image); a class absent from both the truth and the
        # predictions has neither (nan), and is left out of the means, as torchmetrics does.
        iou = hits / (truth + predicted - hits)
        dice = 2 * hits / (truth + predicted)

        def number(value: torch.Tensor) -> float | None:
            return None if torch.isnan(value) else float(value)

        per_class = {
            name: {"iou": number(iou[i]), "dice": number(dice[i]), "pixels": int(truth[i])}
            for i, name in enumerate(class_names)
        }
        return {
            "samples": self.samples,
            "loss": float(self.loss.compute()),
            **{key: float(value) for key, value in self.metrics.compute().items()},
            "dice": float(dice.nanmean()),
            "images_per_sec": self.images_per_sec(),
            "per_class": per_class,
            "confusion_matrix": matrix.long().tolist(),
        }

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure]:
        figures = {}
        if len(class_names) <= MAX_DRAWN_CLASSES:
            figures["confusion_matrix"] = confusion_figure(
                self.confusion, class_names, normalize=True
            )
        if self.worst:
            n = self.shown_images
            figures["worst_segmented"] = segmentation_overlays(
                self.worst["images"][:n],
                self.worst["masks"][:n],
                self.worst["preds"][:n],
                self.model.num_classes,
                class_names,
            )
        return figures


def confusion_figure(
    confusion: MulticlassConfusionMatrix, class_names: Sequence[str], normalize: bool = False
) -> Figure:
    """torchmetrics' confusion-matrix plot; ``normalize``: each true class's row sums to 1
    (pixel counts are too large to read)."""
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


# The model's ``task`` attribute picks its evaluator.
EVALUATORS: dict[str, type[Evaluator]] = {
    "classification": ClassificationEvaluator,
    "segmentation": SegmentationEvaluator,
}


def check_options(cfg: DictConfig) -> None:
    """ConfigError for impossible evaluate.py options, before the checkpoint is read."""
    validate(cfg)
    if cfg.split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {cfg.split!r}")
    for key, low in (("worst_images", 0), ("top_k", 1)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")
    if cfg.get("export") is not None and cfg.export not in EXPORTS:
        raise ConfigError(f"export must be one of {', '.join(EXPORTS)}, got {cfg.export!r}")
    attack = cfg.get("attack")
    if attack:
        if attack.get("name") not in ATTACKS:
            raise ConfigError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
        eps = to_plain(attack).get("eps")
        if (
            not isinstance(eps, list)
            or not eps
            or not all(isinstance(e, int | float) and not isinstance(e, bool) for e in eps)
            or not all(0 <= e <= 1 for e in eps)
        ):
            raise ConfigError(
                f"attack.eps must be a list of numbers in [0, 1] (pixel units), got {eps!r}"
            )


def local_paths(name: str, paths: DictConfig) -> dict[str, Any]:
    """The keys of configs/data/<name>.yaml that point into ``paths`` (data_dir, root),
    resolved on this machine: the checkpoint's are paths on the machine that trained it."""
    group_file = CONFIG_DIR / "data" / f"{name}.yaml"
    if not group_file.is_file():
        return {}
    group = OmegaConf.load(group_file)
    raw = OmegaConf.to_container(group, resolve=False)
    keys = [key for key, value in raw.items() if "${paths." in str(value)]
    merged = OmegaConf.merge({"paths": paths}, {"data": group})
    return {key: merged.data[key] for key in keys}


def resolve_data(cfg: DictConfig, checkpoint: Checkpoint) -> dict[str, Any]:
    """The data config to evaluate on: the checkpoint's own, with this machine's paths and any
    ``data.key=value``; or, with ``data=<name>``, that dataset's config."""
    stored = checkpoint.data
    override = to_plain(cfg.get("data")) or {}
    if "name" in override:
        spec = dict(override)
        # null: the size the model was trained at, not the model's native one.
        if spec.get("image_size") is None:
            spec["image_size"] = stored.get("image_size")
    else:
        name = stored.get("name")
        if name is None:
            raise ConfigError(
                f"{cfg.ckpt_path} does not say which dataset it was trained on: name one with "
                f"data=<{'|'.join(data.available())}>"
            )
        spec = {**stored, **local_paths(str(name), cfg.paths)}
        spec.update({key: value for key, value in override.items() if value is not None})
    if spec["name"] not in data.available():
        raise ConfigError(
            f"dataset {spec['name']!r} is not a zoo dataset; available: "
            f"{', '.join(data.available())} (data=<name>)"
        )
    model = checkpoint.model
    size = spec.get("image_size") or model.native_input_size[0]
    try:
        model.check_input_size(size)
    except ValueError as err:
        raise ConfigError(f"data.image_size={size}: {err}") from err
    spec["image_size"] = int(size)
    classes = spec.get("num_classes")
    if classes is not None and classes != model.num_classes:
        raise ConfigError(
            f"dataset {spec['name']!r} has {classes} classes, but the checkpoint's model "
            f"predicts {model.num_classes}"
        )
    if spec.get("eval_batch_size"):
        spec["batch_size"] = spec["eval_batch_size"]  # the train split, too, is only evaluated
    return spec


def build_datamodule(spec: Mapping[str, Any]) -> pl.LightningDataModule:
    try:
        return data.build(spec)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err


def build_trainer(cfg: DictConfig, loggers: list[Logger], inference_mode: bool) -> pl.Trainer:
    try:
        trainer = instantiate(
            cfg.trainer,
            logger=loggers or False,
            callbacks=[],
            enable_checkpointing=False,
            enable_model_summary=False,
            inference_mode=inference_mode,
        )
    except InstantiationException as err:
        raise ConfigError(f"trainer: {err.__cause__ or err}") from err
    if trainer.num_devices * trainer.num_nodes != 1:
        # The worst-image grid and throughput are per process; metrics would need a gather.
        raise ConfigError("evaluate.py runs on one device: set trainer.devices=1")
    return trainer


def class_names(checkpoint: Checkpoint, spec: Mapping[str, Any], datamodule: Any) -> list[str]:
    """The run's class names, else the data config's or the datamodule's, else the indices."""
    count = checkpoint.model.num_classes
    candidates = (
        checkpoint.hparams.get("class_names"),
        spec.get("class_names"),
        getattr(datamodule, "class_names", None),
    )
    for names in candidates:
        if names and len(names) == count:
            return [str(name) for name in names]
    return [str(i) for i in range(count)]


def save_figures(
    figures: Mapping[str, Figure | None], output_dir: Path, loggers: Sequence[Logger], tag: str
) -> None:
    """Each figure as <name>.png in the run directory and under <tag>/<name> in TensorBoard."""
    for name, figure in figures.items():
        if figure is None:
            continue
        figure.savefig(output_dir / f"{name}.png", dpi=110, bbox_inches="tight")
        for logger in loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_figure(f"{tag}/{name}", figure)
        plt.close(figure)


def log_scalars(loggers: Sequence[Logger], report: Mapping[str, Any], tag: str) -> None:
    scalars = {
        f"{tag}/{key}": float(value)
        for key, value in report.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    for logger in loggers:
        logger.log_metrics(scalars, step=0)
        logger.save()


def use_split(datamodule: pl.LightningDataModule, split: str) -> None:
    """Make Lightning's test loop read ``split``.

    Passing the datamodule itself (not a bare dataloader) keeps its transfer hooks running, on
    the device, exactly as in training.
    """
    if split != "test":
        datamodule.test_dataloader = getattr(datamodule, f"{split}_dataloader")


def evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path`` (or predict, or export); write and return the report."""
    check_options(cfg)
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(cfg.ckpt_path)
    model = checkpoint.model
    evaluator_cls = EVALUATORS.get(model.task)
    if evaluator_cls is None:
        raise ConfigError(f"evaluating {model.task} models is not supported yet")
    if model.task != "classification" and (cfg.get("attack") or cfg.get("predict")):
        raise ConfigError(f"attack and predict are for classifiers; this is a {model.task} model")
    spec = resolve_data(cfg, checkpoint)
    datamodule = build_datamodule(spec)
    names = class_names(checkpoint, spec, datamodule)
    report: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt_path),
        "model": checkpoint.hparams["model"],
        "task": model.task,
        "dataset": spec["name"],
        "image_size": spec["image_size"],
    }

    if cfg.get("predict") or cfg.get("export"):
        if cfg.get("predict"):
            files, batch = read_images(to_plain(cfg.predict), datamodule, model.in_channels)
            trainer = build_trainer(cfg, [], inference_mode=True)
            loader = DataLoader(TensorDataset(batch), batch_size=256)
            probabilities = torch.cat(trainer.predict(evaluator_cls(model), dataloaders=loader))
            report["predictions"] = top_k(files, probabilities, cfg.top_k, names)
            print_predictions(report["predictions"])
            _write_json(output_dir / "predictions.json", report)
        if cfg.get("export"):
            shape = (model.in_channels, spec["image_size"], spec["image_size"])
            report["export"] = export_onnx(model, shape, output_dir / "model.onnx")
        return report

    attack = to_plain(cfg.get("attack"))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = build_trainer(cfg, loggers, inference_mode=not attack)
    use_split(datamodule, cfg.split)
    evaluator = evaluator_cls(model, worst_images=cfg.worst_images)
    trainer.test(evaluator, datamodule=datamodule, verbose=False)
    report.update(split=cfg.split, precision=str(trainer.precision))
    report.update(evaluator.report(names))
    log_scalars(loggers, report, cfg.split)
    save_figures(evaluator.figures(names), output_dir, loggers, cfg.split)

    if attack:
        mean, std = pixel_normalization(datamodule, model.in_channels)
        attacker = FGSMEvaluator(model, attack["eps"], mean, std, attack.get("examples", 8))
        trainer.test(attacker, datamodule=datamodule, verbose=False)
        report["fgsm"] = attacker.report()
        figures = {
            "fgsm_examples": attacker.examples_figure(names),
            "fgsm_accuracy": accuracy_figure(report["fgsm"]["eps"], report["fgsm"]["acc"]),
        }
        save_figures(figures, output_dir, loggers, "fgsm")

    print_report(report, names)
    _write_json(output_dir / "metrics.json", report)
    return report


def read_images(
    targets: str | Sequence[str], datamodule: Any, channels: int
) -> tuple[list[Path], torch.Tensor]:
    """The image files named, and the batch they make, preprocessed as the training data was."""
    preprocess = getattr(datamodule, "preprocess_images", None)
    if preprocess is None:
        raise ConfigError(f"predict: {type(datamodule).__name__} cannot preprocess image files yet")
    files = find_images(targets)
    return files, preprocess(load_images(files, channels))


def print_predictions(predictions: Sequence[Mapping[str, Any]]) -> None:
    table = Table(title="predictions")
    table.add_column("file")
    table.add_column("classes (probability)")
    for row in predictions:
        best = "  ".join(f"{c['class']} {c['probability']:.1%}" for c in row["top_k"])
        table.add_row(row["file"], best)
    Console().print(table)


def print_report(report: Mapping[str, Any], names: Sequence[str]) -> None:
    console = Console()
    console.print(f"checkpoint: {report['checkpoint']}", soft_wrap=True)
    table = Table(title=f"{report['dataset']}, {report['split']} split")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in report.items():
        if isinstance(value, int | float) and key != "image_size":
            table.add_row(key, _cell(value))
    console.print(table)
    if len(names) <= MAX_DRAWN_CLASSES:
        # One table: the confusion matrix, and each true class's own metrics beside its row.
        table = Table(title="per class (rows: true class, columns: predicted)")
        table.add_column("")
        for name in names:
            table.add_column(name, justify="right")
        metrics = sorted({m for row in report["per_class"].values() for m in row})
        for metric in metrics:
            table.add_column(metric, justify="right", style="bold")
        for name, counts in zip(names, report["confusion_matrix"], strict=True):
            own = report["per_class"][name]
            table.add_row(name, *(str(v) for v in counts), *(_cell(own.get(m)) for m in metrics))
        # Wider than the terminal (or 80 columns in a pipe) rather than cut into ellipses.
        needed = console.measure(table, options=console.options.update_width(10_000)).maximum
        Console(width=max(console.width, needed)).print(table)
    if "fgsm" in report:
        fgsm = Table(title="FGSM")
        fgsm.add_column("eps (pixels)", justify="right")
        fgsm.add_column("accuracy", justify="right")
        fgsm.add_row("clean", f"{report['acc']:.4f}")
        for eps, acc in zip(report["fgsm"]["eps"], report["fgsm"]["acc"], strict=True):
            fgsm.add_row(f"{eps:g}", f"{acc:.4f}")
        console.print(fgsm)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
