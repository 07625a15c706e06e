"""What ``python train.py`` does: compose -> validate -> instantiate -> fit -> test."""

from __future__ import annotations

import inspect
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from rich.console import Console
from rich.table import Table

from zoo import data, models
from zoo.config import ConfigError, to_plain, validate
from zoo.tasks import TASKS

log = logging.getLogger(__name__)


def task_options(cfg: DictConfig, module_cls: type[pl.LightningModule]) -> dict[str, Any]:
    """The keys of cfg.task that module_cls takes.

    cfg.task holds the options of every task (label_smoothing, aux_loss_weight for
    classification; loss, dice_weight for segmentation); each module takes its own. A key that
    no task takes is a mistake.
    """
    options = to_plain(cfg.get("task")) or {}
    takes = {task: set(inspect.signature(cls).parameters) for task, cls in TASKS.items()}
    unknown = sorted(set(options) - set().union(*takes.values()))
    if unknown:
        raise ConfigError(f"task.{unknown[0]} is not an option of any task ({sorted(TASKS)})")
    mine = set(inspect.signature(module_cls).parameters)
    return {key: value for key, value in options.items() if key in mine}


def build_task(cfg: DictConfig) -> pl.LightningModule:
    """The LightningModule for cfg.model, built before any data is touched."""
    model_spec = to_plain(cfg.model)
    name = model_spec.get("name")
    if name not in models.available():
        raise ConfigError(
            f"model.name {name!r} is not a zoo model; available: {models.available()}"
        )
    task = models.MODELS.get(name).task
    module_cls = TASKS.get(task)
    if module_cls is None:
        raise ConfigError(f"no training task for {task} models yet (model {name!r})")
    try:
        return module_cls(
            model=model_spec,
            optimizer=to_plain(cfg.optimizer),
            scheduler=to_plain(cfg.scheduler) or None,
            data=to_plain(cfg.data),
            **task_options(cfg, module_cls),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def resolve_image_size(cfg: DictConfig, model: models.ZooModel) -> int:
    """data.image_size, or the model's native size when null; checked against the model."""
    size = cfg.data.get("image_size") or model.native_input_size[0]
    try:
        model.check_input_size(size)
    except ValueError as err:
        raise ConfigError(f"data.image_size={size}: {err}") from err
    return int(size)


def build_datamodule(cfg: DictConfig, image_size: int) -> pl.LightningDataModule:
    try:
        return data.build(to_plain(cfg.data), image_size=image_size)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """'last' means this run directory's last.ckpt; anything else must be an existing file."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            # Lightning would only warn and silently train from scratch.
            raise ConfigError(
                f"ckpt_path=last, but there is no {last}; to resume another run, pass "
                "ckpt_path=<its checkpoints/last.ckpt> or hydra.run.dir=<its run directory>"
            )
        return str(last)
    if not Path(ckpt_path).is_file():
        raise ConfigError(f"ckpt_path {ckpt_path!r} does not exist")
    return ckpt_path


def refuse_ddp_in_multirun(trainer: pl.Trainer) -> None:
    """Lightning relaunches train.py once per extra rank into hydra.run.dir, which in a sweep is
    not the job's directory: the ranks would write apart. Say so rather than misbehave."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if trainer.world_size > 1 and in_sweep:
        raise ConfigError(
            "DDP (trainer.devices > 1 or several nodes) can't run inside a Hydra multirun "
            "(-m): run each configuration as its own train.py command"
        )


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group (each a dict with _target_)."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in sorted(metrics.items()):
        table.add_row(key, f"{value:.4f}")
    Console().print(table)


def train(cfg: DictConfig, output_dir: Path) -> dict[str, float]:
    """Fit, then test the best checkpoint; return the test metrics (or the last val metrics),
    and ``fit_seconds``, as written to ``output_dir/metrics.json``."""
    validate(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", True))
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)

    module = build_task(cfg)
    image_size = resolve_image_size(cfg, module.model)
    datamodule = build_datamodule(cfg, image_size)

    callbacks = instantiate_group(cfg.get("callbacks"))
    loggers = instantiate_group(cfg.get("logger"))
    if not loggers:
        # logger=none: Lightning refuses a LearningRateMonitor with nothing to log to.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    refuse_ddp_in_multirun(trainer)
    for logger in loggers:
        logger.log_hyperparams(to_plain(cfg))

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    # All of fit(): data setup, sanity check, training, validation, checkpoints. The GPU
    # issue's time-to-accuracy target is stated in it (docs/benchmarks.md).
    fit_seconds = time.perf_counter() - start
    log.info("fit() took %.2f s", fit_seconds)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test") and not trainer.fast_dev_run:
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint was saved; testing the weights in memory")
        results = trainer.test(
            module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False
        )
        metrics = {k: float(v) for k, v in results[0].items()}
        print_metrics(f"test metrics ({Path(best).name if best else 'final weights'})", metrics)
    metrics["fit_seconds"] = fit_seconds
    if trainer.is_global_zero:
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
