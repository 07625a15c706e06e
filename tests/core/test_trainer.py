"""zoo.core.trainer: every Trainer argument is in the trainer group at Lightning's default, the
zoo's checks refuse impossible counts and intervals, and Lightning's own refusals are one line."""

from __future__ import annotations

import inspect

import pytest
import pytorch_lightning as pl
from omegaconf import OmegaConf

from zoo.core.errors import ConfigError
from zoo.core.trainer import TrainerConfig, build_trainer, lightning_defaults


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
