"""What ``python evaluate.py`` does: load a checkpoint as untrusted input, rebuild its dataset,
then report metrics (and robustness to FGSM), predict image files, or export to ONNX.

Evaluation is per task, keyed on the model's ``task`` attribute (``EVALUATORS``): each evaluator
is a LightningModule whose ``test_step`` accumulates metrics and whose ``report`` and ``figures``
say what it found. A segmentation evaluator (mIoU, per-class Dice, pixel confusion matrix) slots
in beside the classification one.
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
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo import data
from zoo.attacks import FGSMEvaluator, accuracy_figure, pixel_normalization
from zoo.checkpoints import Checkpoint, load_checkpoint
from zoo.config import CONFIG_DIR, ConfigError, to_plain, validate
from zoo.export import export_onnx
from zoo.plots import labelled_grid
from zoo.predict import find_images, load_images, top_k
from zoo.tasks.classification import accuracy_metrics
from zoo.training import instantiate_group

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")
EXPORTS = ("onnx",)
ATTACKS = ("fgsm",)
# Confusion matrices larger than this are kept in metrics.json but not drawn or printed.
MAX_DRAWN_CLASSES = 30


class ClassificationEvaluator(pl.LightningModule):
    """A classifier's metrics on one split, in one pass: loss, top-1 (and top-5 when there are
    more than 5 classes), the confusion matrix (and from it per-class accuracy), images/s, and
    the misclassified images with the highest loss."""

    def __init__(self, model: nn.Module, worst_images: int = 16) -> None:
        super().__init__()
        self.model = model
        num_classes = model.num_classes
        self.accuracy = accuracy_metrics(num_classes)
        self.confusion = MulticlassConfusionMatrix(num_classes)
        self.loss = MeanMetric()
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
        for metric in (self.accuracy, self.confusion, self.loss):
            metric.reset()
        self.worst, self.samples = {}, 0
        self._synchronize()
        self._started = time.perf_counter()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, targets = batch
        logits = self.model(images).float()
        losses = F.cross_entropy(logits, targets, reduction="none")
        self.loss.update(losses)
        self.accuracy.update(logits, targets)
        self.confusion.update(logits.argmax(dim=1), targets)
        self.samples += len(targets)
        self._keep_worst(images, logits, targets, losses)

    def _keep_worst(
        self,
        images: torch.Tensor,
        logits: torch.Tensor,
        targets: torch.Tensor,
        losses: torch.Tensor,
    ) -> None:
        wrong = logits.argmax(dim=1) != targets
        if self.worst_images <= 0 or not wrong.any():
            return
        probs = logits[wrong].softmax(dim=1)
        found = {
            "loss": losses[wrong],
            "images": images[wrong],
            "preds": probs.argmax(dim=1),
            "confidence": probs.amax(dim=1),
            "targets": targets[wrong],
        }
        found = {key: value.detach().cpu() for key, value in found.items()}
        if self.worst:
            found = {key: torch.cat([self.worst[key], value]) for key, value in found.items()}
        keep = found["loss"].topk(min(self.worst_images, len(found["loss"]))).indices
        self.worst = {key: value[keep] for key, value in found.items()}

    def on_test_epoch_end(self) -> None:
        self._synchronize()
        self.seconds = time.perf_counter() - self._started

    def predict_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.model(batch[0]).float().softmax(dim=1)

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
        report = {
            "samples": self.samples,
            "loss": float(self.loss.compute()),
            **accuracy,
            "images_per_sec": self.samples / self.seconds if self.seconds else None,
            "per_class": per_class,
            "confusion_matrix": matrix.tolist(),
        }
        return report

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure]:
        figures = {}
        if len(class_names) <= MAX_DRAWN_CLASSES:
            figure, ax = self.confusion.plot(
                add_text=len(class_names) <= 20, labels=list(class_names)
            )
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            figures["confusion_matrix"] = figure
        if self.worst:
            worst = self.worst
            titles = [
                f"pred {class_names[p]} {c:.0%}\ntrue {class_names[t]}"
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


# task -> evaluator; the segmentation task (mIoU, Dice, pixel confusion) registers here.
EVALUATORS: dict[str, type[pl.LightningModule]] = {"classification": ClassificationEvaluator}


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


def class_names(checkpoint: Checkpoint, datamodule: Any) -> list[str]:
    """The run's class names, else the datamodule's, else the class indices."""
    count = checkpoint.model.num_classes
    for names in (checkpoint.hparams.get("class_names"), getattr(datamodule, "class_names", None)):
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
    names = class_names(checkpoint, datamodule)
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
    console.print(f"checkpoint: {report['checkpoint']}")
    table = Table(title=f"{report['dataset']}, {report['split']} split")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("samples", "loss", "acc", "acc_top5", "images_per_sec"):
        value = report.get(key)
        if value is not None:
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
        console.print(table)
    if "fgsm" in report:
        fgsm = Table(title="FGSM (eps in pixel units)")
        fgsm.add_column("eps", justify="right")
        fgsm.add_column("accuracy", justify="right")
        fgsm.add_row("clean", f"{report['acc']:.4f}")
        for eps, acc in zip(report["fgsm"]["eps"], report["fgsm"]["acc"], strict=True):
            fgsm.add_row(f"{eps:g}", f"{acc:.4f}")
        console.print(fgsm)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"


def _write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")
