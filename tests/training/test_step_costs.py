"""What the training step no longer does at every step, and what it still promises: the
throughput timed at the logging steps only, the progress bar at its refresh rate."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning_fabric.utilities.throughput import Throughput
from pytorch_lightning.callbacks import RichProgressBar

from zoo.core.config import to_plain
from zoo.tasks.base import count_flops
from zoo.training import throughput
from zoo.training.run import train


def test_images_per_second_counts_every_batch_but_reads_the_clock_only_when_it_logs(
    train_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[int] = []
    update = Throughput.update

    def counted(self: Throughput, **kwargs: object) -> None:
        timed.append(int(kwargs["batches"]))  # type: ignore[call-overload]
        update(self, **kwargs)

    monkeypatch.setattr(Throughput, "update", counted)
    cfg = train_cfg(
        "trainer.max_epochs=2", "trainer.log_every_n_steps=2", "logger=csv", "test=false",
        "trainer.limit_val_batches=0", "callbacks.model_checkpoint.monitor=null",
    )  # fmt: skip
    train(cfg, tmp_path)
    # 10 steps of 128, 128, 128, 128 and 28 digits; the clock read at steps 1, 3, 5, 7, 9.
    assert timed == [2, 4, 6, 8, 10]
    with (tmp_path / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row.get("train/samples")]
    assert [int(float(row["train/batches"])) for row in rows] == [2, 4, 6, 8, 10]
    assert [int(float(row["train/samples"])) for row in rows] == [256, 512, 668, 924, 1080]
    # The FLOPs of every batch in a logging interval, not of the one batch timed.
    flops = count_flops(to_plain(cfg.model), torch.Size([128, 1, 32, 32]), training=True)
    for row in rows[1:]:
        per_batch = float(row["train/device/flops_per_sec"]) / float(
            row["train/device/batches_per_sec"]
        )
        assert per_batch == pytest.approx(flops, rel=1e-4)


def test_the_progress_bar_follows_the_training_batches_at_most_refresh_rate_times_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    updates: list[int] = []
    monkeypatch.setattr(
        RichProgressBar, "on_train_batch_end", lambda self, *args: updates.append(args[-1])
    )
    bar = throughput.ProgressBar(refresh_rate=10)
    bar._trainer = SimpleNamespace(num_training_batches=6, max_epochs=1)
    clock = iter([0.0, 0.05, 0.11, 0.15, 0.3, 0.31])
    monkeypatch.setattr(throughput.time, "monotonic", lambda: next(clock))
    for batch_idx in range(6):
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    # 0.1 s apart at least, and always the epoch's last batch.
    assert updates == [0, 2, 4, 5]
