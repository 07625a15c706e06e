"""benchmarks.step_profile: the variants it times are what they say, and the report adds up."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import step_profile
from tests.conftest import synthetic_train_overrides
from zoo.core.config import compose_config


@pytest.fixture
def overrides(synthetic_mnist: Path) -> list[str]:
    return synthetic_train_overrides(synthetic_mnist)


def test_lightning_alone_switches_off_every_callback_the_logger_and_checkpoints(
    overrides: list[str], tmp_path: Path
) -> None:
    cfg = compose_config(step_profile.lightning_alone(overrides), tmp_path)
    assert cfg.callbacks and all(node is None for node in cfg.callbacks.values())
    assert not cfg.logger
    assert cfg.trainer.enable_checkpointing is False
    assert cfg.trainer.enable_progress_bar is False


def test_every_ablation_switches_off_something_the_config_has(
    overrides: list[str], tmp_path: Path
) -> None:
    full = compose_config(overrides, tmp_path)
    for name, switch_off in step_profile.ABLATIONS:
        cfg = compose_config([*overrides, *switch_off], tmp_path)
        assert cfg != full, name


def test_a_variant_times_only_the_steps_after_the_skipped_ones(
    overrides: list[str], tmp_path: Path
) -> None:
    clock = step_profile.run_variant(overrides, steps=3, skip=1, profiler=True)
    assert clock.steps == 3 and clock.us_per_step > 0
    # Lightning's profiler saw the 4 training batches, and the callbacks' hooks.
    rows = dict(step_profile.profile_per_step(clock.profile, steps=4))
    assert rows["run_training_batch"] > 0
    assert any(name.startswith("[Callback]FiniteGuard") for name in rows)


def test_the_plain_loop_runs_the_same_model_and_batches(overrides: list[str]) -> None:
    assert step_profile.measure_one("plain", overrides, steps=3, skip=1) > 0


def test_the_report_lists_each_part_against_the_full_run() -> None:
    best = {"as configured": 110.0, "Lightning alone": 105.0, "plain": 100.0}
    best.update({f"without {name}": 108.0 for name, _ in step_profile.ABLATIONS})
    result = {
        "overrides": [], "steps": 3, "skip": 1, "rounds": 1, "device": "cpu",
        "us_per_step": best, "cost_us_per_step": {n: 2.0 for n, _ in step_profile.ABLATIONS},
        "profiler_us_per_step": [("run_training_batch", 90.0)], "calls_us": {"x": 1.0},
    }  # fmt: skip
    text = step_profile.render(result)
    assert "| as configured | 110 | +10.0% |" in text
    assert "| per-image distortions | 108 | +2 |" in text
    assert "| `run_training_batch` | 90.0 |" in text
