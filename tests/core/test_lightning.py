"""zoo.core.lightning, the one seam to Lightning's private API: every private attribute it reads
exists in the installed Lightning, with the signature the seam calls it with, and the seam's
functions and base classes do what they say during a real fit."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, RichModelSummary, ThroughputMonitor
from pytorch_lightning.loggers import Logger
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.model_summary import summarize
from torch.utils.data import DataLoader, TensorDataset

from zoo.core.lightning import (
    RichModelSummaryBase,
    ThroughputMonitorBase,
    attached_trainer,
    batches_processed_this_epoch,
    should_update_logs,
    summary_data,
)

BATCH, TRAIN_BATCHES, VAL_BATCHES = 2, 3, 2


class TinyModule(pl.LightningModule):
    """A linear layer that logs its loss at every step it may."""

    flops_per_batch = None  # what ThroughputMonitor reads: not counted here

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.log("val/loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def loader(batches: int) -> DataLoader:
    count = batches * BATCH
    return DataLoader(TensorDataset(torch.randn(count, 2), torch.randn(count, 1)), batch_size=BATCH)


class Writes(Logger):
    """The metrics each step wrote, by step."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "writes"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.steps.setdefault(int(step or 0), {}).update(metrics)


def fit(*callbacks: Callback, epochs: int = 1, log_every_n_steps: int = 2) -> Writes:
    writes = Writes()
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=writes, callbacks=list(callbacks),
        log_every_n_steps=log_every_n_steps, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(TinyModule(), loader(TRAIN_BATCHES), loader(VAL_BATCHES))
    return writes


# --- the private API the seam reads, on real objects ---------------------------------------


def real_objects() -> dict[str, Any]:
    module = TinyModule()
    return {
        "Trainer": pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False),
        "LightningModule": module,
        "ThroughputMonitor": ThroughputMonitor(batch_size_fn=len),
        "RichModelSummary": RichModelSummary(max_depth=2),
        "ModelSummary": summarize(module, max_depth=1),
    }


# (owner, the attribute path the seam reads, for methods: the parameters it calls them with)
PRIVATE_API: list[tuple[str, str, tuple[str, ...] | None]] = [
    ("Trainer", "_logger_connector.should_update_logs", None),
    ("Trainer", "fit_loop.epoch_loop.batch_progress.current.processed", None),
    ("LightningModule", "_trainer", None),
    ("ModelSummary", "_get_summary_data", ()),
    ("ThroughputMonitor", "_start", ("trainer",)),
    ("ThroughputMonitor", "_update", ("trainer", "pl_module", "batch", "iter_num")),
    ("ThroughputMonitor", "_samples", None),
    ("ThroughputMonitor", "_batches", None),
    ("ThroughputMonitor", "_throughputs", None),
    ("ThroughputMonitor", "_t0s", None),
    ("RichModelSummary", "_max_depth", None),
    ("RichModelSummary", "_summarize_kwargs", None),
    ("RichModelSummary", "_summary", ("trainer", "pl_module")),
]


@pytest.mark.parametrize(("owner", "path", "parameters"), PRIVATE_API,
                         ids=[f"{o}.{p}" for o, p, _ in PRIVATE_API])  # fmt: skip
def test_every_private_attribute_the_seam_reads_exists_in_the_installed_lightning(
    owner: str, path: str, parameters: tuple[str, ...] | None
) -> None:
    value = real_objects()[owner]
    for name in path.split("."):
        if not hasattr(value, name):
            pytest.fail(
                f"pytorch-lightning {pl.__version__}: {owner}.{path} is missing (no {name!r}); "
                "zoo/core/lightning.py reads it: adapt the seam before widening the pin"
            )
        value = getattr(value, name)
    if parameters is not None:
        found = tuple(inspect.signature(value).parameters)
        assert found == parameters, (
            f"pytorch-lightning {pl.__version__}: {owner}.{path}{found} no longer takes "
            f"{parameters}, the arguments zoo/core/lightning.py passes or overrides it with"
        )


# --- the functions ------------------------------------------------------------------------


class Record(Callback):
    """Calls ``probe(trainer, pl_module)`` at the end of every training batch."""

    def __init__(self, probe: Callable[[pl.Trainer, pl.LightningModule], Any]) -> None:
        self.probe, self.seen, self.steps = probe, [], []

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        self.seen.append(self.probe(trainer, pl_module))
        self.steps.append(trainer.global_step)


def test_should_update_logs_is_true_exactly_at_the_steps_the_loggers_write() -> None:
    record = Record(lambda trainer, _: should_update_logs(trainer))
    writes = fit(record, epochs=2, log_every_n_steps=2)
    logged = {step for step, metrics in writes.steps.items() if "train/loss" in metrics}
    # Lightning logs a step's metrics under the step count before it (global_step - 1).
    assert {step - 1 for step, now in zip(record.steps, record.seen, strict=True) if now} == logged
    assert record.seen == [False, True] * 3


def test_batches_processed_this_epoch_counts_the_finished_batches_and_restarts_each_epoch() -> None:
    record = Record(lambda trainer, _: batches_processed_this_epoch(trainer))
    fit(record, epochs=2)
    assert record.seen == [*range(1, TRAIN_BATCHES + 1)] * 2


def test_attached_trainer_is_the_running_trainer_and_none_without_one() -> None:
    record = Record(lambda trainer, module: attached_trainer(module) is trainer)
    fit(record)
    assert record.seen == [True] * TRAIN_BATCHES
    assert attached_trainer(TinyModule()) is None


def test_summary_data_is_the_table_column_by_column() -> None:
    summary = summarize(TinyModule(), max_depth=1)
    columns = dict(summary_data(summary))
    assert columns["Name"] == summary.layer_names == ["layer"]
    assert columns["Type"] == ["Linear"]
    assert all(len(cells) == len(summary.layer_names) for cells in columns.values())


# --- the base classes ---------------------------------------------------------------------


class CountedStages(ThroughputMonitorBase):
    """Records Lightning's calls under the public names, and keeps Lightning's behaviour."""

    def __init__(self) -> None:
        super().__init__(batch_size_fn=len)
        self.started: list[RunningStage] = []
        self.batches: list[RunningStage] = []

    def start_stage(self, trainer: pl.Trainer) -> None:
        super().start_stage(trainer)
        self.started.append(trainer.state.stage)

    def count_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                    iter_num: int) -> None:  # fmt: skip
        super().count_batch(trainer, pl_module, batch, iter_num)
        self.batches.append(trainer.state.stage)


def test_lightning_calls_the_throughput_monitors_public_hooks_at_each_stage_and_batch() -> None:
    monitor = CountedStages()
    writes = fit(monitor, log_every_n_steps=1)
    train, val = RunningStage.TRAINING, RunningStage.VALIDATING
    assert monitor.started == [train, val]
    assert monitor.batches == [train] * TRAIN_BATCHES + [val] * VAL_BATCHES
    # Lightning's own counting still runs: the samples it logs are the batches' images.
    logged = [m for m in writes.steps.values() if "train/samples" in m]
    assert logged, writes.steps


class CountedByHand(ThroughputMonitorBase):
    """Counts through add_batch and samples through add_sample, as the zoo's ImagesPerSecond."""

    def __init__(self) -> None:
        super().__init__(batch_size_fn=len, window_size=2)

    def count_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                    iter_num: int) -> None:  # fmt: skip
        stage = trainer.state.stage
        self.add_batch(stage, self.batch_size_fn(batch))
        self.add_sample(stage, flops=None)


def test_add_batch_and_add_sample_feed_the_throughput_lightning_logs() -> None:
    writes = fit(CountedByHand(), log_every_n_steps=1)
    last = max(m["train/samples"] for m in writes.steps.values() if "train/samples" in m)
    assert last == TRAIN_BATCHES * BATCH
    assert max(m.get("train/batches", 0) for m in writes.steps.values()) == TRAIN_BATCHES


def test_the_model_summary_base_prints_the_table_it_is_given(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Renamed(RichModelSummaryBase):
        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            summary = self.layer_summary(trainer, pl_module)
            data = [(c, ["renamed"] if c == "Type" else v) for c, v in summary_data(summary)]
            self.print_summary(summary, data, total_flops=0)

    callback = Renamed(max_depth=3)
    assert callback.max_depth == 3
    fit(callback)
    assert "renamed" in capsys.readouterr().out
