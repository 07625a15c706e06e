"""Multiruns: their sweeper's and launcher's settings checked before Hydra launches a job, and
their failures reported: each failed job as it ends, all of them at the end of the sweep, and a
non-zero exit (both callbacks registered in zoo/configs/hydra/default.yaml)."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from zoo.core.errors import USER_ERRORS, ConfigError
from zoo.core.schema import Schema, option
from zoo.training.objective import Objective

log = logging.getLogger(__name__)

OPTUNA = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
# A trial is a training run: more than this is a typo, not a study.
MAX_TRIALS = 10_000


def is_direction(value: Any) -> bool:
    """The plugin's Direction (its default) or its name; a list would ask for one objective per
    entry, and train.py returns one."""
    return (value.name if isinstance(value, Enum) else value) in ("minimize", "maximize")


# The settings of the plugins the zoo's configs use (hparams_search=, hydra/launcher=submitit_*),
# as hydra-optuna-sweeper 1.3 and hydra-submitit-launcher 1.2 declare them (their config.py),
# with the bounds they leave to a traceback mid-sweep. Hydra checks only their types, and not
# even that for launcher configs of the zoo's own (zoo/configs/hydra/launcher/).
@dataclass
class OptunaSweeperSettings(Schema):
    """hydra.sweeper of hparams_search= (hydra/sweeper=optuna)."""

    title: ClassVar[str] = "hydra/sweeper=optuna"

    _target_: str = OPTUNA
    sampler: dict[str, Any] = field(default_factory=dict)
    # One objective: train.py returns one number (optimized_metric).
    direction: Any = option("minimize", valid=is_direction, what="minimize or maximize")
    storage: Any = None
    study_name: str | None = None
    n_trials: int = option(20, ge=1, le=MAX_TRIALS)
    n_jobs: int = option(2, ge=1, le=MAX_TRIALS)
    max_failure_rate: float = option(0.0, ge=0, le=1)
    search_space: dict[str, Any] | None = None
    params: dict[str, str] | None = None
    custom_search_space: str | None = None


@dataclass
class SubmititSettings(Schema):
    """hydra.launcher of hydra/launcher=submitit_local (BaseQueueConf)."""

    title: ClassVar[str] = "hydra/launcher=submitit_local"

    _target_: str = f"{SUBMITIT}LocalLauncher"
    submitit_folder: str = ""
    timeout_min: int = option(60, ge=1)
    cpus_per_task: int | None = option(None, ge=1)
    gpus_per_node: int | None = option(None, ge=0)
    tasks_per_node: int = option(1, ge=1)
    mem_gb: int | None = option(None, ge=1)
    nodes: int = option(1, ge=1)
    name: str = ""
    stderr_to_stdout: bool = False


@dataclass
class SlurmSettings(SubmititSettings):
    """hydra.launcher of hydra/launcher=submitit_slurm (SlurmQueueConf)."""

    title: ClassVar[str] = "hydra/launcher=submitit_slurm"

    _target_: str = f"{SUBMITIT}SlurmLauncher"
    partition: str | None = None
    qos: str | None = None
    comment: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    gres: str | None = None
    cpus_per_gpu: int | None = option(None, ge=1)
    gpus_per_task: int | None = option(None, ge=1)
    mem_per_gpu: str | None = None
    mem_per_cpu: str | None = None
    account: str | None = None
    signal_delay_s: int = option(120, ge=0)
    max_num_timeout: int = option(0, ge=0)
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    array_parallelism: int = option(256, ge=1)
    setup: list[str] | None = None


SWEEPERS: dict[str, type[Schema]] = {OPTUNA: OptunaSweeperSettings}
LAUNCHERS: dict[str, type[Schema]] = {
    f"{SUBMITIT}LocalLauncher": SubmititSettings,
    f"{SUBMITIT}SlurmLauncher": SlurmSettings,
}


def check_sweep(config: DictConfig) -> None:
    """ConfigError for sweeper and launcher settings that would fail the sweep once launched,
    and for an objective that every trial of a study would refuse: ``config`` is the sweep's,
    composed with its ``hydra`` node. Sweepers and launchers other than the zoo's are theirs to
    check."""
    hydra = config.hydra
    sweeper = SWEEPERS.get(hydra.sweeper.get("_target_"))
    if sweeper is not None:
        sweeper.parse(hydra.sweeper, "hydra.sweeper")
    if sweeper is OptunaSweeperSettings:
        objective = Objective.parse_own(config).optimized_metric
        if objective is None:
            raise ConfigError(
                "optimized_metric=null: hydra/sweeper=optuna needs the validation metric it "
                "optimises, e.g. optimized_metric=val/acc"
            )
    launcher = LAUNCHERS.get(hydra.launcher.get("_target_"))
    if launcher is not None:
        launcher.parse(hydra.launcher, "hydra.launcher")


class CheckSweep(Callback):
    """Checks a multirun's config (``check_sweep``) before Hydra builds its sweeper and launches
    a job: a mistake there is one line and exit code 2, as in a single run, where it would be a
    traceback mid-sweep, or one failure per trial."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_sweep(config)
        except ConfigError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            # Not zoo.core.errors.exit_on_user_error: within a multirun it raises on, to fail
            # one job; nothing has been launched yet.
            print(f"Error: {err}", file=sys.stderr)
            sys.exit(2)


@dataclass
class FailedJob:
    num: int
    overrides: list[str]
    error: BaseException
    output_dir: str


class SweepFailed(CompactHydraException):
    """What Hydra's sweeper raises, once every job has run, in place of the first failure: its
    text is the summary, and Hydra prints it without a stack trace (HYDRA_FULL_ERROR=1 shows
    the failure's own)."""

    def __init__(self, summary: SweepSummary) -> None:
        super().__init__()
        self.summary = summary

    def __str__(self) -> str:
        return self.summary.report()


class SweepSummary(Callback):
    """Logs each failed job of a multirun (a traceback only for errors that are not the user's,
    into the job's log file too) and lists them all when the sweep ends.

    Hydra runs the remaining jobs of a sweep when one fails, then raises the first failure,
    which skips ``on_multirun_end``: the failure is replaced by a SweepFailed whose text is
    the summary, read once all jobs have run. A sweeper that carries on instead reaches
    ``on_multirun_end``, which prints the summary and exits 1.
    """

    def __init__(self) -> None:
        self.overrides: list[list[str]] = []  # of every job so far
        self.failed: list[FailedJob] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.overrides, self.failed = [], []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return  # a single run reports its own error
        self.overrides.append(list(job_return.overrides or ()))
        if job_return.status != JobStatus.FAILED:
            return
        error = job_return._return_value  # the public return_value re-raises it
        job = FailedJob(
            num=config.hydra.job.num,
            overrides=self.overrides[-1],
            error=error,
            output_dir=config.hydra.runtime.output_dir,
        )
        self.failed.append(job)
        if isinstance(error, USER_ERRORS):
            log.error(f"job #{job.num} failed: {error}")
        else:
            log.error(f"job #{job.num} failed", exc_info=error)
        failure = SweepFailed(self)
        failure.__cause__ = error
        job_return.return_value = failure

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.failed:
            print(self.report(), file=sys.stderr)
            sys.exit(1)

    def report(self) -> str:
        """One line per failed job, naming it by the overrides that vary across the sweep."""
        common = set.intersection(*map(set, self.overrides)) if len(self.overrides) > 1 else set()
        lines = [f"{len(self.failed)} of {len(self.overrides)} jobs failed:"]
        for job in self.failed:
            varying = " ".join(o for o in job.overrides if o not in common)
            error = f"{type(job.error).__name__}: {job.error}"
            lines.append(f"  #{job.num} {varying}: {error} ({job.output_dir})")
        return "\n".join(lines)
