"""Multirun failures, reported: each failed job as it ends, all of them at the end of the sweep,
and a non-zero exit (registered in configs/hydra/default.yaml)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from zoo.core.errors import USER_ERRORS

log = logging.getLogger(__name__)


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
