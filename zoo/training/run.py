"""What ``python train.py`` does: compose -> validate -> instantiate -> fit -> test."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor
from rich.console import Console
from rich.table import Table

from zoo.core.config import instantiate_group, to_plain, validate
from zoo.core.errors import ConfigError, in_multirun
from zoo.core.files import write_json
from zoo.core.logs import log_run_directory
from zoo.core.schema import option
from zoo.core.signals import stop_on_signals
from zoo.core.trainer import build_trainer
from zoo.tasks.build import (
    MAX_IMAGE_SIZE,
    build_datamodule,
    follow_weights,
    image_size,
    task_from_config,
)
from zoo.tasks.optim import parse_optimizer, parse_scheduler
from zoo.training.cluster import cluster_ckpt_path
from zoo.training.ema import parse_ema
from zoo.training.objective import Objective, ObjectiveIsLogged, objective_value
from zoo.training.resume import check_checkpoint
from zoo.training.run_lock import single_writer

log = logging.getLogger(__name__)


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """'last' means this run directory's last.ckpt; 'auto' the same when there is one, else
    none (how a requeued cluster job resumes: zoo.training.cluster); anything else must be an
    existing file."""
    if ckpt_path is None:
        return None
    if ckpt_path == "auto":
        last = output_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
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
    # Where the cluster starts every rank itself (SLURM's tasks: zoo.training.cluster), the
    # ranks share the job's directory.
    environment = getattr(trainer.strategy, "cluster_environment", None)
    external = environment is not None and environment.creates_processes_externally
    if trainer.world_size > 1 and in_multirun() and not external:
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


@dataclass
class TrainSettings(Objective):
    """The keys of zoo/configs/train.yaml outside the groups (``optimized_metric``: Objective's)."""

    command: str = "train"
    seed: int | None = option(42, what="an integer or null")
    ckpt_path: str | None = None
    test: bool = True
    max_image_size: int = option(MAX_IMAGE_SIZE, ge=1)


def check_config(cfg: DictConfig) -> TrainSettings:
    """ConfigError for impossible values of a composed train config, before anything is built;
    the model, task and data configs are checked where they are first read, together
    (task_from_config: an image folder's class count completes the model config)."""
    validate(cfg)
    settings = TrainSettings.parse_own(cfg)
    parse_optimizer(cfg.optimizer)
    parse_scheduler(cfg.get("scheduler"))
    parse_ema(cfg.get("callbacks"))
    return settings


def train(
    cfg: DictConfig, output_dir: Path, extra_callbacks: Sequence[pl.Callback] = ()
) -> dict[str, float]:
    """Fit, then test the best checkpoint; return the test metrics (or the last val metrics),
    the ``optimized_metric`` (zoo.training.objective: its best value where the best checkpoint
    is chosen by it) and ``fit_seconds``, as written to ``output_dir/metrics.json``. Under
    ``trainer.fast_dev_run``, which saves no checkpoint, one test batch runs on the weights in
    memory, and its metrics join the fit's.

    Rank 0 holds ``output_dir`` for the whole run (zoo.training.run_lock): a second train.py
    there stops with a message. ``extra_callbacks`` join the config's (for tools that watch a
    run: benchmarks/step_profile.py)."""
    log_run_directory(output_dir)
    # SIGTERM and Ctrl-C: a checkpoint at the next batch end (zoo.training.preemption).
    with stop_on_signals(), ExitStack() as held:
        metrics = _train(cfg, output_dir, held, list(extra_callbacks))
    log_run_directory(output_dir, "checkpoints/, TensorBoard logs, metrics.json, train.log")
    return metrics


def _train(
    cfg: DictConfig, output_dir: Path, held: ExitStack, extra_callbacks: list[pl.Callback]
) -> dict[str, float]:
    check_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark", True))
    ckpt_path = resolve_ckpt_path(cluster_ckpt_path(cfg.get("ckpt_path")), output_dir)

    module = task_from_config(cfg)
    if ckpt_path is not None:
        check_checkpoint(Path(ckpt_path), module, averages=bool(parse_ema(cfg.get("callbacks"))))
    size = image_size(module.model, cfg.data.get("image_size"), cfg.get("max_image_size"))
    # Mean, std and evaluation resize follow pretrained weights unless the data config says.
    weights_preprocessing = follow_weights(module, to_plain(cfg.data))
    datamodule = build_datamodule(to_plain(cfg.data), image_size=size, **weights_preprocessing)

    callbacks = instantiate_group(cfg.get("callbacks")) + extra_callbacks
    loggers = instantiate_group(cfg.get("logger"))
    objective = cfg.get("optimized_metric")
    if objective and in_multirun():
        # A sweep can't score a run that doesn't log its objective: stop at the sanity check.
        callbacks.append(ObjectiveIsLogged(objective))
    if not loggers:
        # logger=none: Lightning refuses a LearningRateMonitor with nothing to log to.
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = build_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    refuse_ddp_in_multirun(trainer)
    if trainer.is_global_zero:
        # Before anything is written (Hydra's config goes to a fresh .hydra/ subfolder when one
        # is there already: zoo/configs/hydra/default.yaml); only rank 0 writes.
        held.enter_context(single_writer(output_dir))
    for logger in loggers:
        logger.log_hyperparams(to_plain(cfg))

    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    # All of fit(): data setup, sanity check, training, validation, checkpoints. The GPU
    # time-to-accuracy target is stated in it (docs/benchmarks.md, "GPU").
    fit_seconds = time.perf_counter() - start
    log.info("fit() took %.2f s", fit_seconds)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objective_best = objective_value(trainer, objective) if objective else None
    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best and not trainer.fast_dev_run:
            log.warning("no best checkpoint was saved; testing the weights in memory")
        # fast_dev_run saves no checkpoint: its one test batch runs on the weights in memory.
        results = trainer.test(
            module, datamodule=datamodule, ckpt_path=best or None, weights_only=True, verbose=False
        )
        tested = {k: float(v) for k, v in results[0].items()}
        # fast_dev_run checks that every loop runs: it reports each loop's one batch.
        metrics = {**metrics, **tested} if trainer.fast_dev_run else tested
        print_metrics(f"test metrics ({Path(best).name if best else 'final weights'})", metrics)
    if objective_best is not None:
        metrics[objective] = objective_best  # what train.py hands to sweepers
    metrics["fit_seconds"] = fit_seconds
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
    return metrics
