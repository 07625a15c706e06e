"""zoo.core.csv_logger: logger=csv keeps a run's metrics.csv rows when the run is resumed into
its own directory (ckpt_path=last), where Lightning's CSVLogger deletes them."""

from __future__ import annotations

import csv
import warnings
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from zoo.core.csv_logger import AppendingCSVLogger
from zoo.training.run import train

SHORT = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false",
         "task.log_images=0", "logger=csv")  # fmt: skip


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def test_a_resumed_run_appends_to_the_first_runs_metrics_csv(
    train_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    train(train_cfg(*SHORT, "trainer.max_epochs=1"), tmp_path)
    first = rows(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(train_cfg(*SHORT, "trainer.max_epochs=2", "ckpt_path=last"), tmp_path)
    resumed = rows(tmp_path)

    # Lightning's CSVLogger: "Previous log files in this directory will be deleted ..."
    assert not [w for w in caught if "will be deleted" in str(w.message)]

    assert resumed[: len(first)] == first
    epochs = [
        {row["epoch"] for row in part if row["epoch"]} for part in (first, resumed[len(first) :])
    ]
    assert epochs == [{"0"}, {"1"}]
    assert [row["step"] for row in resumed if row["train/loss"]] == ["0", "1", "2", "3"]


def test_a_new_column_after_a_resume_keeps_every_row(tmp_path: Path) -> None:
    first = AppendingCSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    resumed = AppendingCSVLogger(tmp_path, name="csv", version="")
    resumed.log_metrics({"a": 2.0, "b": 3.0}, step=1)
    resumed.save()
    assert rows(tmp_path) == [
        {"a": "1.0", "b": "", "step": "0"},
        {"a": "2.0", "b": "3.0", "step": "1"},
    ]
