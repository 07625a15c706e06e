"""The ``trainer`` config group: every argument of Lightning's Trainer, the keys the zoo checks,
and building the Trainer from it, for train.py and evaluate.py alike.

``zoo/configs/trainer/default.yaml`` starts from ``trainer/lightning``, a node registered in Hydra's
ConfigStore holding every Trainer argument at Lightning's own default, read from the installed
Lightning's signature: any argument is a plain override (``trainer.max_time=00:01:00:00``, no
``+``), none is spelled out for a version it may not fit, and the yaml files say only what the
zoo changes. :class:`TrainerConfig` is the schema of the arguments the zoo checks before a run
starts; Lightning checks the others when the Trainer is built (``build_trainer``).
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import Any

import psutil
import pytorch_lightning as pl
import torch
from hydra.core.config_store import ConfigStore
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, is_integer, is_number, option

log = logging.getLogger(__name__)

# The node zoo/configs/trainer/default.yaml extends.
LIGHTNING_DEFAULTS = "lightning"
# Trainer arguments that are config groups of their own (zoo/configs/logger, zoo/configs/callbacks).
OWN_GROUPS = ("logger", "callbacks")
# The zoo's own keys in the trainer group, read here and not passed to Lightning's Trainer.
ZOO_KEYS = ("threads",)
MAX_THREADS = 1024
# How long ``threads: auto`` watches the machine before choosing.
CPU_SAMPLE_SECONDS = 0.25


def lightning_defaults() -> dict[str, Any]:
    """Every argument of ``pytorch_lightning.Trainer`` at its default, with ``_target_``."""
    parameters = inspect.signature(pl.Trainer.__init__).parameters
    return {
        "_target_": "pytorch_lightning.Trainer",
        **{
            name: parameter.default
            for name, parameter in parameters.items()
            if name != "self" and name not in OWN_GROUPS
        },
    }


def register_configs() -> None:
    """Put ``trainer/lightning`` into Hydra's ConfigStore; train.py, evaluate.py and
    ``zoo.core.config.compose_config`` call it before composing."""
    store = ConfigStore.instance()
    store.store(group="trainer", name=LIGHTNING_DEFAULTS, node=lightning_defaults())


def _interval(value: Any) -> bool:
    if value is None:
        return True
    if is_integer(value):
        return value >= 1
    return is_number(value) and 0 < value <= 1


def _threads(value: Any) -> bool:
    return value == "auto" or (is_integer(value) and 1 <= value <= MAX_THREADS)


def cores_for_this_run() -> tuple[int, float]:
    """(cores this process may run on, how many of them other processes keep busy now)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    busy = psutil.cpu_percent(interval=CPU_SAMPLE_SECONDS) / 100 * (os.cpu_count() or 1)
    return cores or 1, busy


def set_threads(threads: int | str) -> None:
    """torch's intra-op threads. ``auto``: one per core that no other process keeps busy (at
    least one), unless ``OMP_NUM_THREADS`` says otherwise. Measured on a 2-core machine
    (docs/benchmarks.md, "CPU threads"): beside one busy process, LeNet-5 at 2 threads ran
    5.4x slower than at 1, the threads spinning on each other; idle, 2 threads were 1.4x faster."""
    if threads == "auto":
        if "OMP_NUM_THREADS" in os.environ:
            return
        cores, busy = cores_for_this_run()
        threads = max(1, cores - round(busy))
        log.info("threads: %d (auto: %d cores, %.1f busy with other work)", threads, cores, busy)
    torch.set_num_threads(int(threads))


@dataclass
class TrainerConfig(Schema):
    """The Trainer arguments the zoo checks before anything is built: counts and intervals that
    Lightning divides by or steps with (0 fails deep inside a run)."""

    max_epochs: int | None = option(None, ge=1, what="an integer >= 1")
    max_steps: int = option(-1, ge=-1)
    min_epochs: int | None = option(None, ge=0, what="an integer >= 0")
    accumulate_grad_batches: int = option(1, ge=1)
    log_every_n_steps: int | None = option(None, ge=1, what="an integer >= 1")
    check_val_every_n_epoch: int | None = option(1, ge=1, what="an integer >= 1 or null")
    val_check_interval: Any = option(
        None,
        valid=_interval,
        what="a number of batches >= 1, a fraction of an epoch in (0, 1], or null",
    )
    num_sanity_val_steps: int | None = option(
        None, ge=-1, what="an integer >= -1 (-1: all) or null"
    )
    gradient_clip_val: float | None = option(None, ge=0, what="a number >= 0 or null")
    threads: Any = option("auto", valid=_threads, what=f"auto or an integer in [1, {MAX_THREADS}]")

    def check(self, key: str) -> None:
        low, high = self.min_epochs, self.max_epochs
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{key}.min_epochs={low} is more than {key}.max_epochs={high}")


def build_trainer(trainer: DictConfig, **objects: Any) -> pl.Trainer:
    """The composed ``trainer`` group instantiated with ``objects`` (loggers, callbacks, ...);
    the values Lightning refuses are a ConfigError naming them. Sets torch's threads first
    (``trainer.threads``)."""
    set_threads(trainer.get("threads", "auto"))
    arguments = OmegaConf.to_container(trainer, resolve=True)
    for key in ZOO_KEYS:
        arguments.pop(key, None)
    try:
        return instantiate(arguments, **objects)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, MisconfigurationException | ValueError | TypeError):
            raise ConfigError(f"trainer: {cause}") from err
        raise
