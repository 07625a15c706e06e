"""What ``python train.py`` does: compose -> validate -> instantiate -> fit -> test."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from rich.console import Console
from rich.table import Table

from zoo.core.config import instantiate_group, to_plain, validate
from zoo.core.errors import ConfigError, in_multirun
from zoo.tasks.build import build_datamodule, build_task, image_size

log = logging.getLogger(__name__)


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
    if trainer.world_size > 1 and in_multirun():
        raise ConfigError(
            "DDP (trainer.devices > 1 or several nodes) can't run inside a Hydra multirun "
            "(-m): run each configuration as its own train.py command"
        )


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

    module = build_task(
        to_plain(cfg.model),
        to_plain(cfg.optimizer),
        to_plain(cfg.scheduler) or None,
        to_plain(cfg.data),
        to_plain(cfg.get("task")) or {},
    )
    size = image_size(module.model, cfg.data.get("image_size"))
    datamodule = build_datamodule(to_plain(cfg.data), image_size=size)

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
