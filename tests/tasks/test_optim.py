"""The optimizer and scheduler schemas (zoo/tasks/optim.py): every option of
zoo/configs/optimizer and zoo/configs/scheduler, and every recipe of zoo/configs/experiment, parses
with its schema; impossible values are refused in one line naming the key, before any data is
loaded; and the optimizer and schedule built are those the checked config describes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from torch.optim import lr_scheduler

from zoo.core.config import CONFIG_DIR, compose_config
from zoo.core.errors import ConfigError
from zoo.tasks.optim import (
    MIN_ONECYCLE_STEPS,
    OPTIMIZERS,
    SCHEDULERS,
    build_optimizer,
    build_scheduler,
    parse_optimizer,
    parse_scheduler,
)


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / group).glob("*.yaml"))


def keys_of(group: str, name: str) -> dict[str, Any]:
    """The keys zoo/configs/<group>/<name>.yaml sets."""
    return yaml.safe_load((CONFIG_DIR / group / f"{name}.yaml").read_text()) or {}


@pytest.fixture
def composed(tmp_path: Path) -> Iterator[Any]:
    """The train config composed with command-line overrides, as train.py composes it."""

    def compose(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), tmp_path)

    yield compose
    GlobalHydra.instance().clear()


def parameters() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


@pytest.mark.parametrize("name", options("optimizer"))
def test_each_optimizer_config_parses_with_its_schema(name: str) -> None:
    written = keys_of("optimizer", name)
    parsed = parse_optimizer(written)
    assert type(parsed) is OPTIMIZERS[name]
    # Every key of the file is a field of the schema, holding the file's value.
    assert {key: parsed.to_dict()[key] for key in written} == written


@pytest.mark.parametrize("name", options("scheduler"))
def test_each_scheduler_config_parses_with_its_schema(name: str, composed) -> None:
    cfg = composed(f"scheduler={name}", "optimizer.lr=0.004")
    parsed = parse_scheduler(cfg.scheduler)
    written = keys_of("scheduler", name)
    if not written:  # none.yaml: a constant learning rate
        assert parsed is None
        return
    assert type(parsed) is SCHEDULERS[name]
    # ${optimizer.lr} resolved: the peak is the optimizer's lr.
    resolved = {k: 0.004 if v == "${optimizer.lr}" else v for k, v in written.items()}
    assert {key: parsed.to_dict()[key] for key in written} == resolved


def test_every_group_option_has_a_schema_and_every_schema_an_option() -> None:
    assert sorted(OPTIMIZERS) == options("optimizer")
    assert sorted([*SCHEDULERS, "none"]) == options("scheduler")


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_recipe_has_a_valid_optimizer_and_schedule(experiment: str, composed) -> None:
    cfg = composed(f"experiment={experiment}")
    assert parse_optimizer(cfg.optimizer).lr > 0
    parse_scheduler(cfg.scheduler)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.lr=-0.1"], "optimizer.lr must be a number > 0, got -0.1"),
        (["optimizer.lr=0"], "optimizer.lr must be a number > 0, got 0"),
        (["optimizer.lr=fast"], "optimizer.lr must be a number > 0, got 'fast'"),
        (["+optimizer.betas=[0.9,1.5]"], r"optimizer.betas must be two numbers in \[0, 1\)"),
        (["+optimizer.betas=[0.9]"], r"optimizer.betas must be two numbers in \[0, 1\)"),
        (["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay must be a number >= 0"),
        (["+optimizer.eps=0"], "optimizer.eps must be a number > 0, got 0"),
        (
            ["+optimizer.momentum=0.9"],
            r"optimizer.momentum is not an option of optimizer=adam \(options: name, lr,",
        ),
        (["+optimizer.foreach=true"], "optimizer.fused and optimizer.foreach are two"),
        (["optimizer=sgd", "optimizer.momentum=1"], r"momentum must be a number in \[0, 1\)"),
        (["optimizer=sgd", "optimizer.momentum=-0.5"], r"momentum must be a number in \[0, 1\)"),
        (
            ["optimizer=sgd", "optimizer.momentum=0", "optimizer.nesterov=true"],
            "optimizer.nesterov needs optimizer.momentum > 0",
        ),
        (["optimizer=rmsprop", "optimizer.alpha=1"], r"alpha must be a number in \[0, 1\)"),
        (["optimizer=adamw", "+optimizer.nesterov=true"], "is not an option of optimizer=adamw"),
    ],
)
def test_impossible_optimizer_settings_are_one_line_naming_the_key(
    overrides: list[str], message: str, composed
) -> None:
    cfg = composed(*overrides)
    with pytest.raises(ConfigError, match=message) as refused:
        parse_optimizer(cfg.optimizer)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["scheduler=step", "scheduler.step_size=0"],
            "scheduler.step_size must be an integer >= 1",
        ),
        (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma must be a number > 0"),
        (
            ["scheduler=multistep", "scheduler.milestones=[60,30]"],
            "scheduler.milestones must be a list of epochs >= 1 in increasing order",
        ),
        (["scheduler=cosine", "scheduler.warmup_epochs=-1"], "warmup_epochs must be a number >= 0"),
        (["scheduler=cosine", "scheduler.min_lr=-1"], "scheduler.min_lr must be a number >= 0"),
        (["scheduler=cosine", "+scheduler.warmup=2"], "scheduler.warmup is not an option of"),
        (
            ["scheduler=onecycle", "scheduler.pct_start=1"],
            r"pct_start must be a number in \(0, 1\)",
        ),
        (["scheduler=onecycle", "scheduler.max_lr=-1"], "scheduler.max_lr must be a number > 0"),
        (
            ["scheduler=onecycle", "+scheduler.anneal_strategy=cosine"],
            "scheduler.anneal_strategy must be one of cos, linear, got 'cosine'",
        ),
        (
            ["scheduler=onecycle", "+scheduler.three_phase=true", "scheduler.pct_start=0.5"],
            "scheduler.pct_start must be < 0.5 with scheduler.three_phase",
        ),
    ],
)
def test_impossible_scheduler_settings_are_one_line_naming_the_key(
    overrides: list[str], message: str, composed
) -> None:
    cfg = composed(*overrides)
    with pytest.raises(ConfigError, match=message) as refused:
        parse_scheduler(cfg.scheduler)
    assert "\n" not in str(refused.value)


def test_an_unknown_name_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"optimizer.name must be one of sgd, adam, adamw, rms"):
        parse_optimizer({"name": "nadam", "lr": 0.1})
    with pytest.raises(ConfigError, match=r"scheduler.name must be one of step, multistep, cos"):
        parse_scheduler({"name": "linear"})


def test_the_built_optimizer_has_the_checked_settings(composed) -> None:
    adam = build_optimizer(parameters(), composed("optimizer=adam", "optimizer.lr=0.02").optimizer)
    assert isinstance(adam, torch.optim.Adam)
    assert (adam.defaults["lr"], adam.defaults["betas"], adam.defaults["fused"]) == (
        0.02,
        (0.9, 0.999),
        True,
    )
    sgd = build_optimizer(parameters(), composed("optimizer=sgd").optimizer)
    assert isinstance(sgd, torch.optim.SGD)
    assert (sgd.defaults["momentum"], sgd.defaults["weight_decay"]) == (0.9, 5e-4)
    # A partial spec (a tool's, or a checkpoint's from before a key existed): torch's defaults.
    rmsprop = build_optimizer(parameters(), {"name": "rmsprop", "lr": 0.1})
    assert (rmsprop.defaults["alpha"], rmsprop.defaults["momentum"]) == (0.99, 0.0)


def test_build_refuses_what_parse_refuses() -> None:
    with pytest.raises(ConfigError, match=r"optimizer.lr must be a number > 0"):
        build_optimizer(parameters(), {"name": "sgd", "lr": -1})
    optimizer = build_optimizer(parameters(), {"name": "sgd", "lr": 0.1})
    with pytest.raises(ConfigError, match=r"scheduler.step_size must be an integer >= 1"):
        build_scheduler(optimizer, {"name": "step", "step_size": 0}, 100, 10)


@pytest.mark.parametrize(
    ("name", "kind", "interval"),
    [
        ("step", lr_scheduler.StepLR, "epoch"),
        ("multistep", lr_scheduler.MultiStepLR, "epoch"),
        ("cosine", lr_scheduler.SequentialLR, "step"),  # warm-up, then cosine
        ("onecycle", lr_scheduler.OneCycleLR, "step"),
    ],
)
def test_each_schedule_is_built_from_its_config(name: str, kind: type, interval: str, composed):
    cfg = composed("optimizer=sgd", f"scheduler={name}")
    optimizer = build_optimizer(parameters(), cfg.optimizer)
    schedule = build_scheduler(optimizer, cfg.scheduler, total_steps=200, steps_per_epoch=10)
    assert schedule is not None
    assert isinstance(schedule["scheduler"], kind) and schedule["interval"] == interval


def test_no_scheduler_is_a_constant_rate(composed) -> None:
    optimizer = build_optimizer(parameters(), {"name": "sgd", "lr": 0.1})
    assert build_scheduler(optimizer, composed("scheduler=none").scheduler, 100, 10) is None


def test_a_short_onecycle_run_is_planned_for_the_minimum_length() -> None:
    optimizer = build_optimizer(parameters(), {"name": "adam", "lr": 0.1})
    schedule = build_scheduler(optimizer, {"name": "onecycle", "max_lr": None}, 3, 1)
    assert schedule is not None and schedule["scheduler"].total_steps == MIN_ONECYCLE_STEPS
    # max_lr null: the peak is the optimizer's lr.
    assert [group["max_lr"] for group in optimizer.param_groups] == [0.1]
