"""callbacks=ema: Lightning's EMAWeightAveraging on top of the default callbacks; validation, the
best checkpoint, the test after training, evaluate.py and predict= all use the average, and the
raw weights stay in the checkpoint for resume (the SIGKILL resume with EMA:
tests/training/test_fault_tolerance.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import compose_config, synthetic_digits, synthetic_train_overrides
from zoo.core.config import CONFIG_DIR, instantiate_group
from zoo.core.errors import ConfigError
from zoo.evaluation.run import evaluate
from zoo.training.ema import EMA, EMAConfig, check_resumed_averaging, parse_ema
from zoo.training.run import check_config, train

# A decay this low makes the average differ from the raw weights within a few steps.
EMA_RUN = (
    "callbacks=ema",
    "callbacks.ema.decay=0.8",
    "trainer.max_epochs=2",
    "data.batch_size=32",
    "logger=none",
    # A loss, not an accuracy, so that averaged and raw weights score differently.
    "callbacks.model_checkpoint.monitor=val/loss",
    "callbacks.model_checkpoint.mode=min",
)


@dataclass
class EMARun:
    best: Path
    test_metrics: dict[str, float]
    data_dir: Path


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def ema_run(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> EMARun:
    run = tmp_path_factory.mktemp("ema")
    cfg = compose_config([*synthetic_train_overrides(synthetic_mnist), *EMA_RUN], run)
    metrics = train(cfg, run)
    GlobalHydra.instance().clear()
    [best] = [p for p in (run / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return EMARun(best, metrics, synthetic_mnist)


def evaluate_checkpoint(run: EMARun, ckpt: Path, output_dir: Path, *overrides: str) -> dict:
    base = [
        f"ckpt_path={ckpt}",
        f"paths.data_dir={run.data_dir}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
    ]
    cfg = compose_config([*base, *overrides], output_dir, config_name="evaluate")
    try:
        return evaluate(cfg, output_dir)
    finally:
        GlobalHydra.instance().clear()


def with_raw_weights(ckpt: Path, out: Path) -> Path:
    """The checkpoint with its raw weights as state_dict: what a loader of the wrong key sees."""
    checkpoint = load(ckpt)
    checkpoint["state_dict"] = checkpoint.pop("current_model_state")
    torch.save(checkpoint, out)
    return out


def test_callbacks_ema_is_the_default_callbacks_plus_lightnings_ema(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import EMAWeightAveraging

    default = compose_config(["callbacks=default"], tmp_path).callbacks
    cfg = compose_config(
        ["callbacks=ema", "callbacks.ema.update_starting_at_step=7"], tmp_path
    ).callbacks
    GlobalHydra.instance().clear()
    assert list(cfg) == [*default, "ema"]
    [ema] = [c for c in instantiate_group(cfg) if isinstance(c, EMAWeightAveraging)]
    assert ema.update_starting_at_step == 7


def test_the_best_checkpoint_holds_the_average_as_state_dict_and_the_raw_weights_apart(
    ema_run: EMARun,
) -> None:
    checkpoint = load(ema_run.best)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in average)
    assert checkpoint["averaging_state"]["n_averaged"] == checkpoint["global_step"]


def test_validation_the_test_after_training_and_evaluate_score_the_average(
    ema_run: EMARun, tmp_path: Path
) -> None:
    checkpoint = load(ema_run.best)
    [best_val_loss] = [
        state["best_model_score"]
        for name, state in checkpoint["callbacks"].items()
        if "'monitor': 'val/loss'" in name
    ]
    on_val = evaluate_checkpoint(ema_run, ema_run.best, tmp_path / "val", "split=val")
    on_test = evaluate_checkpoint(ema_run, ema_run.best, tmp_path / "test")
    raw = with_raw_weights(ema_run.best, tmp_path / "raw.ckpt")
    raw_on_val = evaluate_checkpoint(ema_run, raw, tmp_path / "raw_val", "split=val")

    # The best checkpoint was chosen by the average's val/loss, which evaluate.py recomputes.
    assert on_val["loss"] == pytest.approx(float(best_val_loss), rel=1e-5)
    assert raw_on_val["loss"] != pytest.approx(float(best_val_loss), rel=1e-3)
    assert on_test["loss"] == pytest.approx(ema_run.test_metrics["test/loss"], rel=1e-6)


def test_predict_uses_the_average(ema_run: EMARun, tmp_path: Path) -> None:
    images, _ = synthetic_digits(3, seed=5)
    for i, image in enumerate(images):
        Image.fromarray(np.asarray(image)).save(tmp_path / f"digit{i}.png")
    raw = with_raw_weights(ema_run.best, tmp_path / "raw.ckpt")

    def probabilities(ckpt: Path) -> list[float]:
        report = evaluate_checkpoint(ema_run, ckpt, tmp_path / ckpt.stem, f"predict={tmp_path}")
        return [row["top_k"][0]["probability"] for row in report["predictions"]]

    average_only = load(ema_run.best)
    del average_only["current_model_state"], average_only["averaging_state"]
    torch.save(average_only, tmp_path / "average_only.ckpt")
    assert probabilities(ema_run.best) == probabilities(tmp_path / "average_only.ckpt")
    assert probabilities(ema_run.best) != probabilities(raw)


def test_the_decay_and_the_start_step_are_the_configs(train_cfg, tmp_path: Path) -> None:
    """decay 0: the average is the latest weights; the updates count from the start step."""
    cfg = train_cfg(
        *EMA_RUN[:1],
        "callbacks.ema.decay=0.0",
        "callbacks.ema.update_starting_at_step=10",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=14",
        "data.batch_size=16",
        "logger=none",
        "test=false",
    )
    train(cfg, tmp_path)
    checkpoint = load(tmp_path / "checkpoints" / "last.ckpt")
    steps = checkpoint["global_step"]
    assert checkpoint["averaging_state"]["n_averaged"] == steps - 10
    for key, average in checkpoint["state_dict"].items():
        assert torch.equal(average, checkpoint["current_model_state"][key]), key


IMPOSSIBLE = [
    ("callbacks.ema.decay=1.5", "callbacks.ema.decay must be a number in \\[0, 1\\)"),
    # An average that never moves from the first weights.
    ("callbacks.ema.decay=1.0", "callbacks.ema.decay must be a number in \\[0, 1\\), got 1.0"),
    ("callbacks.ema.update_starting_at_step=-3", "update_starting_at_step must be"),
    ("callbacks.ema.update_every_n_steps=0", "update_every_n_steps must be"),
]


@pytest.mark.parametrize(("override", "message"), IMPOSSIBLE)
def test_impossible_ema_settings_are_config_errors_before_training(
    override: str, message: str, tmp_path: Path
) -> None:
    cfg = compose_config(["callbacks=ema", override], tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_the_ema_config_file_parses_with_its_schema(tmp_path: Path) -> None:
    cfg = compose_config(["callbacks=ema"], tmp_path)
    GlobalHydra.instance().clear()
    parsed = parse_ema(cfg.callbacks)
    assert list(parsed) == ["ema"]
    # Every key of the file is a field of the schema, holding the file's value.
    written = yaml.safe_load((CONFIG_DIR / "callbacks" / "ema.yaml").read_text())["ema"]
    assert {key: parsed["ema"].to_dict()[key] for key in written} == written


def test_callbacks_without_an_ema_have_nothing_to_check(tmp_path: Path) -> None:
    cfg = compose_config(["callbacks=default"], tmp_path)
    GlobalHydra.instance().clear()
    assert parse_ema(cfg.callbacks) == {}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        *IMPOSSIBLE,
        (
            "callbacks.ema.decay=slow",
            "callbacks.ema.decay must be a number in \\[0, 1\\), got 'slow'",
        ),
        (
            "callbacks.ema.update_starting_at_step=-3",
            "callbacks.ema.update_starting_at_step must be an integer >= 0 or null, got -3",
        ),
        ("+callbacks.ema.device=cpu", "callbacks.ema.device is not an option of callbacks=ema"),
    ],
)
def test_the_ema_schema_refuses_impossible_settings_in_one_line(
    override: str, message: str, tmp_path: Path
) -> None:
    cfg = compose_config(["callbacks=ema", override], tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match=message) as refused:
        parse_ema(cfg.callbacks)
    assert "\n" not in str(refused.value)


def test_the_callback_reads_its_checked_settings() -> None:
    ema = EMA(**EMAConfig(decay=0.5, update_starting_at_step=3).callback_arguments())
    assert (ema.update_starting_at_step, ema.update_every_n_steps) == (3, 1)
    with pytest.raises(ConfigError, match=r"callbacks.ema.update_every_n_steps must be an integer"):
        EMA(update_every_n_steps=0)


# Two epochs of 5 steps: step indices 0 to 9.
SHORT_RUN = ("trainer.max_epochs=2", "trainer.limit_train_batches=5")


def test_an_average_that_the_run_would_never_update_is_refused_before_training(
    train_cfg, tmp_path: Path
) -> None:
    cfg = train_cfg(
        "callbacks=ema", "callbacks.ema.update_starting_at_step=10", *SHORT_RUN, "logger=none"
    )
    with pytest.raises(ConfigError) as refused:
        train(cfg, tmp_path)
    assert str(refused.value) == (
        "callbacks=ema with update_starting_at_step=10 never updates the average in this run's "
        "10 steps (trainer.max_epochs=2 of 5 steps): it would keep the untrained weights, which "
        "every checkpoint, the test and evaluate.py would score. Start the updates before the "
        "run's end"
    )
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"update_every_n_steps": 10},
            "callbacks=ema with update_every_n_steps=10 updates the average after the first step "
            "only in this run's 10 steps (10 steps): it would keep the first step's weights",
        ),
        # The epoch alone leaves the step updates on: those start past the end too.
        (
            {"update_starting_at_epoch": 2, "update_starting_at_step": 10},
            "callbacks=ema with update_starting_at_step=10 and update_starting_at_epoch=2 never "
            "updates the average",
        ),
    ],
)
def test_every_schedule_that_leaves_the_first_weights_is_refused(
    settings: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        EMAConfig(**settings).check_schedule(steps=10, steps_per_epoch=5, how="10 steps")
    assert str(refused.value).startswith(message)


@pytest.mark.parametrize(
    ("settings", "updates"),
    [
        ({}, 10),  # after every step
        ({"update_starting_at_step": 9}, 1),  # after the last one: the trained weights
        ({"update_every_n_steps": 4}, 3),  # indices 0, 4 and 8
        ({"update_starting_at_step": 5, "update_every_n_steps": 4}, 1),  # index 8
        ({"update_starting_at_step": 10, "update_starting_at_epoch": 1}, 1),  # epoch 1's end
    ],
)
def test_the_updates_counted_are_those_lightnings_ema_makes(
    settings: dict[str, int], updates: int
) -> None:
    assert EMAConfig(**settings).updates(steps=10, steps_per_epoch=5) == updates


def test_an_average_the_first_update_still_dominates_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    EMAConfig(decay=0.999).check_schedule(steps=100, steps_per_epoch=50, how="a short run")
    [record] = caplog.records
    assert record.getMessage() == (
        "callbacks.ema: 100 updates of the average in this run's 100 steps (a short run) leave "
        "the first update's weights 91% of it at the end (decay 0.999): lower the decay for a "
        "run this short"
    )


def test_a_resume_that_would_switch_the_average_off_or_on_is_refused(
    ema_run: EMARun, train_cfg, tmp_path: Path
) -> None:
    last = ema_run.best.parent / "last.ckpt"
    cfg = train_cfg(
        "trainer.max_epochs=3", "data.batch_size=32", "logger=none", f"ckpt_path={last}"
    )
    with pytest.raises(ConfigError) as refused:
        train(cfg, tmp_path)
    assert str(refused.value) == (
        f"{last} was trained with callbacks=ema, this run has no EMA: it would train on from "
        "the checkpoint's average instead of its weights. Resume with callbacks=ema (and its "
        "settings of the first run), or start a fresh run (without ckpt_path, in a new "
        "hydra.run.dir)"
    )
    with pytest.raises(ConfigError, match=r"^plain.ckpt was trained without callbacks=ema, this"):
        check_resumed_averaging(Path("plain.ckpt"), checkpoint_averages=False, run_averages=True)
    check_resumed_averaging(Path("a.ckpt"), checkpoint_averages=True, run_averages=True)
