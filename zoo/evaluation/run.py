"""What ``python evaluate.py`` does: load a checkpoint as untrusted input, rebuild its task module
and dataset, then run that module's own test loop — the one training tests with — with report
callbacks for what training does not log (confusion matrix, per-class metrics, worst samples,
images/s, FGSM robustness); or predict image files, or export to ONNX."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, TensorDataset

from zoo import data
from zoo.core.config import CONFIG_DIR, instantiate_group, to_plain, validate
from zoo.core.errors import ConfigError
from zoo.core.files import write_json
from zoo.core.logs import log_run_directory, print_full_width, write_to_log_files
from zoo.core.plots import log_figure
from zoo.core.schema import Schema, option
from zoo.core.signals import StopRequested, check_stop_before_forward, stop_on_signals
from zoo.core.trainer import build_trainer
from zoo.data.base import ZooDataModule
from zoo.data.images import MAX_IMAGE_PIXELS
from zoo.evaluation import visualize
from zoo.evaluation.attacks import (
    attack_tables,
    build_attack,
    check_attack,
    pixel_normalization,
)
from zoo.evaluation.checkpoint import Checkpoint, load_checkpoint
from zoo.evaluation.onnx import export_onnx
from zoo.evaluation.outputs import output_errors, prepare_output_dir
from zoo.evaluation.predict import find_images, preprocess_files, top_k
from zoo.evaluation.pretrained import check_source, published_weights
from zoo.evaluation.report_html import REPORT_FILE, REPORTS, write_html_report
from zoo.evaluation.reports import (
    MAX_DRAWN_CLASSES,
    PerClass,
    Report,
    Throughput,
    WorstSamples,
    metric_values,
)
from zoo.tasks.build import MAX_IMAGE_SIZE, build_datamodule, follow_weights, image_size

log = logging.getLogger(__name__)

SPLITS = ("test", "val", "train")
EXPORTS = ("onnx",)


@dataclass
class EvaluateSettings(Schema):
    """The keys of zoo/configs/evaluate.yaml outside the groups."""

    command: str = "evaluate"
    ckpt_path: str | None = None
    split: str = option("test", choices=SPLITS)
    # Kept across the loop and drawn in one figure.
    worst_images: int = option(16, ge=0, at_most=256)
    predict: Any = None  # a path or a list of them (zoo.evaluation.predict checks them)
    top_k: int = option(5, ge=1)
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, ge=1)
    max_image_size: int = option(MAX_IMAGE_SIZE, ge=1)
    visualize: Any = None  # method names (zoo.evaluation.visualize.requested checks them)
    export: str | None = option(None, choices=(None, *EXPORTS), what="one of onnx")
    report: str = option("html", choices=REPORTS)


def check_options(cfg: DictConfig) -> None:
    """ConfigError for impossible evaluate.py options, before the checkpoint is read."""
    check_source(cfg)  # ckpt_path= or model= with model.weights= (and data=)
    validate(cfg)
    EvaluateSettings.parse_own(cfg)
    visualize.requested(cfg)  # the method names, before the checkpoint is read
    if cfg.get("export") is not None and cfg.export not in EXPORTS:
        raise ConfigError(f"export must be one of {', '.join(EXPORTS)}, got {cfg.export!r}")
    if cfg.get("attack"):
        check_attack(to_plain(cfg.attack))


def local_paths(name: str, paths: DictConfig) -> dict[str, Any]:
    """The keys of zoo/configs/data/<name>.yaml that point into ``paths`` (data_dir, root),
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
    ``data.key=value``; or, with ``data=<name>``, that dataset's config. Checked against the
    dataset's schema (``zoo.data.parse``); of the checkpoint's, the keys that the schema no
    longer has are left out (``zoo.data.restore``: a checkpoint of an older zoo)."""
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
        spec = {**data.restore(stored), **local_paths(str(name), cfg.paths)}
        spec.update({key: value for key, value in override.items() if value is not None})
    if spec["name"] not in data.available():
        raise ConfigError(
            f"dataset {spec['name']!r} is not a zoo dataset; available: "
            f"{', '.join(data.available())} (data=<name>)"
        )
    model = checkpoint.model
    spec["image_size"] = image_size(model, spec.get("image_size"), cfg.get("max_image_size"))
    spec = data.parse(spec).to_dict()
    classes = spec.get("num_classes")
    if classes is not None and classes != model.num_classes:
        raise ConfigError(
            f"dataset {spec['name']!r} has {classes} classes, but the checkpoint's model "
            f"predicts {model.num_classes}"
        )
    if spec.get("eval_batch_size"):
        spec["batch_size"] = spec["eval_batch_size"]  # the train split, too, is only evaluated
    return spec


def evaluation_trainer(
    cfg: DictConfig,
    loggers: list[Logger],
    inference_mode: bool,
    callbacks: Sequence[pl.Callback] = (),
) -> pl.Trainer:
    """The trainer group's Trainer, for one pass over a split: no checkpoints, no summary."""
    trainer = build_trainer(
        cfg.trainer,
        logger=loggers or False,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_model_summary=False,
        inference_mode=inference_mode,
    )
    if trainer.num_devices * trainer.num_nodes != 1:
        # The worst-image grid and throughput are per process; metrics would need a gather.
        raise ConfigError("evaluate.py runs on one device: set trainer.devices=1")
    return trainer


def save_figures(
    figures: Mapping[str, Figure | None], output_dir: Path, loggers: Sequence[Logger], tag: str
) -> dict[str, str]:
    """Each figure as <name>.png in the run directory and under <tag>/<name> in TensorBoard;
    returns the files written, by figure name."""
    written = {}
    for name, figure in figures.items():
        if figure is None:
            continue
        written[name] = f"{name}.png"
        figure.savefig(output_dir / written[name], dpi=110, bbox_inches="tight")
        log_figure(loggers, f"{tag}/{name}", figure)
    return written


def log_scalars(
    loggers: Sequence[Logger],
    report: Mapping[str, Any],
    tag: str,
    tagged: Mapping[str, float] | None = None,
) -> None:
    """The report's top-level numbers under ``tag/<key>``, and the ``tagged`` scalars as named."""
    scalars = {
        f"{tag}/{key}": float(value)
        for key, value in report.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    scalars.update(tagged or {})
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
    """Evaluate ``cfg.ckpt_path`` (or predict, or export); write and return the report.

    The metrics come from the task module's own test loop, the one training tests with: the
    module is rebuilt from the checkpoint, and the report callbacks (zoo.evaluation.reports) add
    what training does not log. Every output goes into ``output_dir``, checked first
    (zoo.evaluation.outputs): a write that can't happen is one line naming the path.
    """
    check_options(cfg)
    prepare_output_dir(output_dir)
    log_run_directory(output_dir)
    try:
        # SIGTERM or Ctrl-C: the next forward pass stops (zoo.core.signals), exit 143 or 130.
        with output_errors(output_dir), stop_on_signals():
            report = _evaluate(cfg, output_dir)
            written = "metrics.json, figures, evaluate.log"
            if cfg.report == "html":
                write_html_report(report, output_dir)
                written = f"{REPORT_FILE}, {written}"
    except StopRequested as stop:
        log.warning(f"{stop.reason}: evaluate.py stopped before its end; {stop.saved}")
        raise
    log_run_directory(output_dir, written)
    return report


def _evaluate(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    ckpt_path = cfg.get("ckpt_path")
    checkpoint = load_checkpoint(ckpt_path) if ckpt_path else published_weights(cfg)
    module, model = checkpoint.module, checkpoint.model
    # Every loop here (the test loop, attacks, visualisations, predictions) is forward passes.
    check_stop_before_forward(model)
    if model.task != "classification" and (cfg.get("attack") or cfg.get("predict")):
        raise ConfigError(f"attack and predict are for classifiers; this is a {model.task} model")
    spec = resolve_data(cfg, checkpoint)
    spec.update(follow_weights(module, spec))  # model.weights= without a checkpoint
    datamodule = build_datamodule(spec)
    report: dict[str, Any] = {
        "checkpoint": str(cfg.ckpt_path),
        "model": checkpoint.hparams["model"],
        "pretrained": module.pretrained.summary() if module.pretrained else None,
        "task": model.task,
        "dataset": spec["name"],
        "image_size": spec["image_size"],
    }

    if visualize.requested(cfg) and not cfg.get("attack"):
        # The visualisations alone: no pass over the split.
        loggers = instantiate_group(cfg.get("logger"))
        return visualize.visualize(cfg, checkpoint, datamodule, report, output_dir, loggers)

    if cfg.get("predict") or cfg.get("export"):
        if cfg.get("predict"):
            files, batch = read_images(
                to_plain(cfg.predict), datamodule, model.in_channels, cfg.max_image_pixels
            )
            trainer = evaluation_trainer(cfg, [], inference_mode=True)
            loader = DataLoader(TensorDataset(batch), batch_size=256)
            probabilities = torch.cat(trainer.predict(module, dataloaders=loader))
            names = module.names(datamodule)
            report["predictions"] = top_k(files, probabilities, cfg.top_k, names)
            print_predictions(report["predictions"])
            write_json(output_dir / "predictions.json", report)
        if cfg.get("export"):
            shape = (model.in_channels, spec["image_size"], spec["image_size"])
            report["export"] = export_onnx(model, shape, output_dir / "model.onnx")
        return report

    attack = to_plain(cfg.get("attack"))
    reports: list[Report] = [
        Throughput(with_attack=bool(attack)),
        PerClass(model.num_classes, model.task),
        WorstSamples(cfg.worst_images, model.task, model.num_classes),
    ]
    if attack:
        mean, std = pixel_normalization(datamodule, model.in_channels)
        reports.append(build_attack(attack, mean, std, model.num_classes, output_dir))
    loggers = instantiate_group(cfg.get("logger"))
    trainer = evaluation_trainer(cfg, loggers, inference_mode=not attack, callbacks=reports)
    use_split(datamodule, cfg.split)
    [results] = trainer.test(module, datamodule=datamodule, verbose=False)
    names = module.names(datamodule)
    report.update(split=cfg.split, precision=str(trainer.precision), **metric_values(results))
    tagged: dict[str, float] = {}
    figures: dict[str, str] = {}
    for callback in reports:
        report.update(callback.report(trainer, names))
        figures.update(
            save_figures(callback.figures(names), output_dir, loggers, callback.tag or cfg.split)
        )
        tagged.update(callback.scalars())
    log_scalars(loggers, report, cfg.split, tagged)
    report["figures"] = figures  # by name: the files report.html inlines
    print_report(report, names)
    write_json(output_dir / "metrics.json", report)
    if visualize.requested(cfg):  # with attack=: after the attacked evaluation, one report
        return visualize.visualize(cfg, checkpoint, datamodule, report, output_dir, loggers)
    return report


def read_images(
    targets: str | Sequence[str], datamodule: ZooDataModule, channels: int, max_pixels: int
) -> tuple[list[Path], torch.Tensor]:
    """The image files named, and the batch they make, preprocessed as the training data was."""
    files = find_images(targets)
    return files, preprocess_files(files, channels, datamodule.preprocess_images, max_pixels)


def print_predictions(predictions: Sequence[Mapping[str, Any]]) -> None:
    """The predictions as a table on the console, and in the run's log file."""
    table = Table(title="predictions")
    table.add_column("file")
    table.add_column("classes (probability)")
    for row in predictions:
        best = "  ".join(f"{c['class']} {c['probability']:.1%}" for c in row["top_k"])
        table.add_row(row["file"], best)
    console = Console(record=True)
    console.print(table)
    write_to_log_files(console.export_text(), __name__)


def print_report(report: Mapping[str, Any], names: Sequence[str]) -> None:
    """The report's tables on the console, and in the run's log file."""
    console = Console(record=True)
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
        print_full_width(console, table)
    for table in attack_tables(report):
        console.print(table)
    write_to_log_files(console.export_text(), __name__)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"
