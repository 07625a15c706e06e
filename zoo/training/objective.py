"""The number a sweep optimises (``optimized_metric``): a validation metric, never a test one
(``Objective``, checked in every run and, for a whole sweep, before Hydra launches it:
``zoo.training.sweep.CheckSweep``).

``train.py`` returns it to Hydra's sweepers (the Optuna sweeper of ``hparams_search=``): its best
value over the run when it is what the best checkpoint is chosen by, else its last value.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback as HydraCallback
from omegaconf import DictConfig

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option

VALIDATION_PREFIX = "val/"


def is_validation_metric(name: str | None) -> bool:
    return name is None or name.startswith(VALIDATION_PREFIX)


@dataclass
class Objective(Schema):
    """``optimized_metric``, a top-level key of zoo/configs/train.yaml."""

    # test/ would tune on the test set.
    optimized_metric: str | None = option(
        None,
        valid=is_validation_metric,
        what="a validation metric (val/...) or null, never a test metric",
    )


class ObjectiveNotLogged(ConfigError):
    """``optimized_metric`` names a metric the run does not log."""


def logged_validation_metrics(trainer: pl.Trainer) -> list[str]:
    return sorted(k for k in trainer.callback_metrics if k.startswith(VALIDATION_PREFIX))


class ObjectiveIsLogged(pl.Callback):
    """Stops the run with ObjectiveNotLogged at its first validation (the sanity check, two
    batches in) when ``optimized_metric`` is not among the metrics logged, rather than after a
    whole run that a sweep could not score."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.name not in trainer.callback_metrics:
            raise not_logged(self.name, trainer)


def not_logged(name: str, trainer: pl.Trainer) -> ObjectiveNotLogged:
    return ObjectiveNotLogged(
        f"optimized_metric={name} is never logged; the validation metrics logged are "
        f"{', '.join(logged_validation_metrics(trainer)) or 'none'}"
    )


def objective_value(trainer: pl.Trainer, name: str) -> float | None:
    """The best value of ``name`` when the best checkpoint is chosen by it, else its value at the
    last validation; None when validation never ran."""
    checkpoint = trainer.checkpoint_callback
    monitor = getattr(checkpoint, "monitor", None)
    if monitor == name and checkpoint.best_model_score is not None:
        return float(checkpoint.best_model_score)
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


class StopSweepOnUnloggedObjective(HydraCallback):
    """A sweep whose objective one job does not log would fail every job alike: stop it there,
    with the job's one line and exit code 2 (registered in zoo/configs/hydra/default.yaml)."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # the public return_value re-raises it
        cause = getattr(error, "__cause__", None)  # as zoo.training.sweep.SweepSummary wraps it
        for candidate in (error, cause):
            if isinstance(candidate, ObjectiveNotLogged):
                print(f"Error: {candidate} (sweep stopped)", file=sys.stderr)
                sys.exit(2)
