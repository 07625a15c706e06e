"""A multirun's results in one table (registered in zoo/configs/hydra/default.yaml): once every
job has run (``python train.py -m optimizer.lr=1e-3,3e-3 model=lenet,resnet18``, any launcher
or sweeper), one row per job, with the overrides that vary across the jobs and the numbers of
the job's metrics.json. Printed, and written to the sweep directory as multirun_results.md and
multirun_results.csv.

The jobs are read back from the sweep directory, not collected as they end: a launcher such as
submitit's runs them in other processes, where this process's callbacks never see them end.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from zoo.core.logs import print_full_width

RESULTS_FILE = "multirun_results"
# What a job wrote: its overrides (Hydra, hydra.output_subdir) and its results (train.py and
# evaluate.py alike).
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
METRICS_FILE = "metrics.json"
NO_VALUE = "-"


@dataclass
class JobResult:
    """One job of a sweep: its directory (relative to the sweep's), its overrides, and the
    numbers at the top level of its metrics.json (None: it wrote none, having failed)."""

    name: str
    overrides: list[str]
    metrics: dict[str, float] | None


def read_jobs(sweep_dir: Path) -> list[JobResult]:
    """The jobs under ``sweep_dir`` (each a directory with .hydra/overrides.yaml, at any
    depth: ``hydra.sweep.subdir`` may nest them), in their natural order (2 before 10)."""
    jobs = []
    for overrides_file in sweep_dir.glob(f"**/{OVERRIDES_FILE}"):
        job_dir = overrides_file.parent.parent
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        metrics_file = job_dir / METRICS_FILE
        metrics = None
        if metrics_file.is_file():
            metrics = numbers(json.loads(metrics_file.read_text()))
        name = job_dir.relative_to(sweep_dir).as_posix()
        jobs.append(JobResult(name, [str(o) for o in overrides], metrics))
    return sorted(jobs, key=lambda job: natural_key(job.name))


def numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers at the top level of a metrics.json (evaluate.py's nests its tables)."""
    return {
        key: value
        for key, value in report.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class ResultsTable:
    """The sweep's jobs as rows: the overrides that every job shares (``common``, said once),
    one column per overridden key whose value varies (``keys``), and one per metric
    (``metrics``), each in the order first met."""

    jobs: list[JobResult]
    common: list[str]
    varying: list[dict[str, str]]  # of each job: key -> value, for the keys that vary
    keys: list[str]
    metrics: list[str]

    @classmethod
    def of(cls, jobs: Sequence[JobResult]) -> ResultsTable:
        shared = set.intersection(*(set(job.overrides) for job in jobs)) if jobs else set()
        common = [o for o in (jobs[0].overrides if jobs else []) if o in shared]
        varying = [dict(split(o) for o in job.overrides if o not in shared) for job in jobs]
        keys = unique(key for values in varying for key in values)
        metrics = unique(key for job in jobs for key in (job.metrics or {}))
        return cls(list(jobs), common, varying, keys, metrics)

    @property
    def columns(self) -> list[str]:
        return ["job", *self.keys, *self.metrics]

    def rows(self, number: Callable[[float | None], str]) -> list[list[str]]:
        """The cells of each job, its metrics written by ``number``."""
        return [
            [
                job.name,
                *(values.get(key, NO_VALUE) for key in self.keys),
                *(number((job.metrics or {}).get(key)) for key in self.metrics),
            ]
            for job, values in zip(self.jobs, self.varying, strict=True)
        ]

    def rich(self, title: str) -> Table:
        # Escaped: rich would read an override such as model.layers=[conv] as its markup.
        table = Table(title=escape(title), caption=escape(self.caption()))
        for column in self.columns:
            table.add_column(escape(column), justify="left" if column == "job" else "right")
        for row in self.rows(rounded):
            table.add_row(*map(escape, row))
        return table

    def markdown(self, title: str) -> str:
        lines = [f"# {title}", "", self.caption(), ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(row) + " |" for row in self.rows(rounded)]
        return "\n".join(lines) + "\n"

    def write_csv(self, path: Path) -> None:
        """The same columns, the metrics at full precision (empty: none)."""
        with path.open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(self.columns)
            writer.writerows(self.rows(exact))

    def caption(self) -> str:
        return f"every job: {' '.join(self.common) or '(no common overrides)'}"


def split(override: str) -> tuple[str, str]:
    """``key=value`` as (key, value); ``~key`` (a deletion) as (``~key``, "")."""
    key, _, value = override.partition("=")
    return key, value


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def rounded(value: float | None) -> str:
    if value is None:
        return NO_VALUE
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def exact(value: float | None) -> str:
    return "" if value is None else str(value)


def report_sweep(sweep_dir: Path, console: Console | None = None) -> ResultsTable | None:
    """Print the table of the jobs under ``sweep_dir`` and write it there as
    multirun_results.md and .csv; None, and nothing written, if no job is there."""
    jobs = read_jobs(sweep_dir)
    if not jobs:
        return None
    table = ResultsTable.of(jobs)
    title = f"multirun: {len(jobs)} jobs in {sweep_dir}"
    print_full_width(console or Console(), table.rich(title))
    (sweep_dir / f"{RESULTS_FILE}.md").write_text(table.markdown(title))
    table.write_csv(sweep_dir / f"{RESULTS_FILE}.csv")
    return table


class MultirunTable(Callback):
    """Hydra callback: the table of the sweep's jobs once the sweep ends.

    A sweep that Hydra's basic sweeper ends with a failed job raises before its callbacks'
    ``on_multirun_end``: zoo.training.sweep.SweepSummary reports those."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        report_sweep(Path(config.hydra.sweep.dir))
