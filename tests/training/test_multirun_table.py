"""zoo.training.multirun_table: once a multirun's jobs have run, one table of them (the overrides
that vary, and each job's final metrics), printed whole and written to the sweep directory as
multirun_results.md and .csv."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import yaml
from rich.console import Console

from tests.conftest import run_script, synthetic_train_overrides
from zoo.training.multirun_table import read_jobs, report_sweep

COMMON = ["trainer.max_epochs=1", "data.batch_size=8"]


def fabricate_job(sweep_dir: Path, name: str, overrides: list[str], metrics: dict | None) -> None:
    job = sweep_dir / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))


def fabricated_sweep(sweep_dir: Path) -> None:
    """Jobs 0, 1, 2 and 10 of a sweep over optimizer.lr and model; job 2 failed (no metrics)."""
    runs = [
        ("0", "0.001", "lenet", {"val/acc": 0.91234, "fit_seconds": 12.5}),
        ("1", "0.003", "lenet", {"val/acc": 0.95, "fit_seconds": 13.0}),
        ("2", "0.001", "resnet18", None),
        # evaluate.py's metrics.json nests its tables: only the top-level numbers are read.
        ("10", "0.003", "resnet18", {"val/acc": 0.5, "per_class": {"0": {"acc": 1.0}}}),
    ]
    for name, lr, model, metrics in runs:
        fabricate_job(sweep_dir, name, [*COMMON, f"optimizer.lr={lr}", f"model={model}"], metrics)


def test_the_table_has_a_row_per_job_in_order_the_varying_overrides_and_the_metrics(
    tmp_path: Path,
) -> None:
    fabricated_sweep(tmp_path)
    written = io.StringIO()
    table = report_sweep(tmp_path, Console(file=written))
    assert table is not None
    assert table.columns == ["job", "optimizer.lr", "model", "val/acc", "fit_seconds"]
    assert table.common == COMMON
    with (tmp_path / "multirun_results.csv").open() as file:
        rows = list(csv.reader(file))
    assert rows == [
        table.columns,
        ["0", "0.001", "lenet", "0.91234", "12.5"],
        ["1", "0.003", "lenet", "0.95", "13.0"],
        ["2", "0.001", "resnet18", "", ""],
        ["10", "0.003", "resnet18", "0.5", ""],
    ]
    markdown = (tmp_path / "multirun_results.md").read_text()
    assert "| 0 | 0.001 | lenet | 0.9123 | 12.5 |" in markdown
    assert "| 2 | 0.001 | resnet18 | - | - |" in markdown
    assert "every job: trainer.max_epochs=1 data.batch_size=8" in markdown
    # Printed whole, though the console is not a terminal (80 columns).
    printed = written.getvalue()
    assert "…" not in printed and "0.9123" in printed and "fit_seconds" in printed


def test_nothing_is_written_where_no_job_ran(tmp_path: Path) -> None:
    assert report_sweep(tmp_path, Console(file=io.StringIO())) is None
    assert list(tmp_path.iterdir()) == []


def test_jobs_nested_by_a_custom_subdir_are_found(tmp_path: Path) -> None:
    fabricate_job(tmp_path, "lr=0.1/seed=2", ["optimizer.lr=0.1", "seed=2"], {"val/acc": 0.5})
    [job] = read_jobs(tmp_path)
    assert job.name == "lr=0.1/seed=2" and job.metrics == {"val/acc": 0.5}


def test_a_multirun_of_train_py_ends_with_its_table(synthetic_mnist: Path, tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "optimizer.lr=0.001,0.002",
        *synthetic_train_overrides(synthetic_mnist),
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "logger=none",
        "test=false",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [sweep_dir] = (tmp_path / "train" / "multiruns").iterdir()
    with (sweep_dir / "multirun_results.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(row["job"], row["optimizer.lr"]) for row in rows] == [("0", "0.001"), ("1", "0.002")]
    for row in rows:
        metrics = json.loads((sweep_dir / row["job"] / "metrics.json").read_text())
        assert float(row["val/acc"]) == metrics["val/acc"]
    assert "multirun: 2 jobs in" in result.stdout and "optimizer.lr" in result.stdout
