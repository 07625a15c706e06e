"""zoo.core.trainer: every Trainer argument is in the trainer group at Lightning's default, the
zoo's checks refuse impossible counts and intervals, and Lightning's own refusals are one line."""

from __future__ import annotations

import inspect

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from zoo.core import trainer as trainer_module
from zoo.core.errors import ConfigError
from zoo.core.trainer import TrainerConfig, build_trainer, lightning_defaults, set_threads


def test_the_lightning_node_holds_every_trainer_argument_at_its_default() -> None:
    parameters = inspect.signature(pl.Trainer.__init__).parameters
    defaults = lightning_defaults()
    assert defaults.pop("_target_") == "pytorch_lightning.Trainer"
    assert defaults == {
        name: p.default
        for name, p in parameters.items()
        if name not in ("self", "logger", "callbacks")
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_epochs": 0}, "trainer.max_epochs must be an integer >= 1, got 0"),
        ({"max_epochs": "abc"}, "trainer.max_epochs must be an integer >= 1, got 'abc'"),
        ({"val_check_interval": 1.5}, "trainer.val_check_interval must be a number of batches"),
        ({"val_check_interval": 0}, "trainer.val_check_interval must be a number of batches"),
        ({"min_epochs": 3, "max_epochs": 2}, "trainer.min_epochs=3 is more than"),
        ({"num_sanity_val_steps": -2}, "trainer.num_sanity_val_steps must be an integer >= -1"),
        ({"threads": 0}, r"trainer.threads must be auto or an integer in \[1, 1024\], got 0"),
        ({"threads": "many"}, "trainer.threads must be auto or an integer in"),
    ],
)
def test_impossible_values_are_refused(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig.parse_own({**lightning_defaults(), **values}, "trainer")


@pytest.mark.parametrize("interval", [None, 1, 200, 0.25, 1.0])
def test_validation_intervals_in_batches_or_fractions_pass(interval: float | None) -> None:
    parsed = TrainerConfig.parse_own({"val_check_interval": interval}, "trainer")
    assert parsed.val_check_interval == interval


def test_lightnings_own_refusals_are_config_errors() -> None:
    trainer = OmegaConf.create({**lightning_defaults(), "devices": 0, "accelerator": "cpu"})
    with pytest.raises(ConfigError, match=r"^trainer: .*devices=0"):
        build_trainer(trainer, logger=False)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("cores", "busy", "expected"), [(2, 0.1, 2), (2, 0.9, 1), (2, 2.0, 1), (8, 3.2, 5)]
)
def test_auto_threads_are_the_cores_no_other_process_keeps_busy(
    monkeypatch, restore_threads, cores: int, busy: float, expected: int
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(trainer_module, "cores_for_this_run", lambda: (cores, busy))
    set_threads("auto")
    assert torch.get_num_threads() == expected


def test_auto_threads_leave_an_explicit_omp_num_threads_alone(monkeypatch, restore_threads) -> None:
    torch.set_num_threads(1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(trainer_module, "cores_for_this_run", lambda: (8, 0.0))
    set_threads("auto")
    assert torch.get_num_threads() == 1


def test_the_trainer_is_built_with_the_threads_asked_for_and_without_the_zoo_key(
    restore_threads,
) -> None:
    trainer = OmegaConf.create({**lightning_defaults(), "accelerator": "cpu", "threads": 1})
    built = build_trainer(trainer, logger=False)
    assert isinstance(built, pl.Trainer)
    assert torch.get_num_threads() == 1
