"""Sweeps: the objective train.py hands to sweepers is a validation metric chosen by config,
Optuna studies (hparams_search=) that survive failed trials and write their best parameters,
and multiruns through submitit (hydra/launcher=submitit_local / submitit_slurm) whose requeued
jobs resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.conftest import (
    UNET_MNIST_TOY,
    compose_config,
    run_script,
    synthetic_train_overrides,
)
from zoo.core.errors import ConfigError
from zoo.training.cluster import SUBMITIT_JOB
from zoo.training.run import check_config, train
from zoo.training.sweep import check_sweep

# One short epoch per job, on the synthetic digits, quiet.
TOY = ("trainer.max_epochs=1", "logger=none", "test=false")


def sweep_dir(log_dir: Path) -> Path:
    [directory] = (log_dir / "train" / "multiruns").iterdir()
    return directory


def job_metrics(directory: Path) -> dict[int, dict[str, float]]:
    return {
        int(path.parent.name): json.loads(path.read_text())
        for path in directory.glob("*/metrics.json")
    }


def best_score(run_dir: Path) -> float:
    [best] = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    callbacks = torch.load(best, weights_only=True)["callbacks"]
    return float(next(s["best_model_score"] for s in callbacks.values() if "best_model_score" in s))


def test_the_objective_is_never_a_test_metric(tmp_path: Path) -> None:
    cfg = compose_config(["optimized_metric=test/acc"], tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError, match="optimized_metric must be a validation metric"):
        check_config(cfg)


def test_by_default_the_objective_is_the_best_checkpoints_validation_score(
    train_cfg, tmp_path: Path
) -> None:
    """Not test/acc, which train.py used to hand to sweepers, and not the last epoch's."""
    metrics = train(train_cfg("trainer.max_epochs=2", "logger=none"), tmp_path)
    assert train_cfg().optimized_metric == "val/acc"
    assert metrics["val/acc"] == best_score(tmp_path)
    assert "test/acc" in metrics  # still tested, and reported, but never the objective


@pytest.mark.slow
def test_segmentation_hands_sweepers_its_validation_miou(tmp_path: Path) -> None:
    cfg = compose_config([*UNET_MNIST_TOY, "trainer.max_epochs=1", "logger=none"], tmp_path)
    assert cfg.optimized_metric == "val/miou"
    metrics = train(cfg, tmp_path)
    GlobalHydra.instance().clear()
    assert metrics["val/miou"] == best_score(tmp_path)


@pytest.mark.slow
def test_a_3_trial_optuna_study_goes_on_past_a_failed_trial_and_writes_the_best(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        "hparams_search=lenet_mnist_optuna",
        "hydra.sweeper.n_trials=3",
        *synthetic_train_overrides(synthetic_mnist),
        *TOY,
        "+callbacks.fail._target_=tests.training.sweep_helpers.FailJob",
        "+callbacks.fail.num=1",
        f"paths.log_dir={tmp_path}",
    )
    # The failed trial is reported, by number, and makes the exit code 1 once the study is done.
    assert result.returncode == 1, result.stderr[-3000:]
    assert "1 of 3 jobs failed" in result.stderr
    assert "job 1 crashed" in result.stdout + result.stderr
    directory = sweep_dir(tmp_path)
    trials = job_metrics(directory)
    assert sorted(trials) == [0, 2]  # the study went on after trial 1 failed
    results = yaml.safe_load((directory / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {
        "optimizer.lr",
        "data.batch_size",
        "task.label_smoothing",
        "optimizer.weight_decay",
    }
    assert results["best_value"] == max(t["val/acc"] for t in trials.values())
    assert f"Best value: {results['best_value']}" in result.stdout + result.stderr


def test_a_study_whose_objective_is_never_logged_stops_in_one_line_with_exit_code_2(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        "hparams_search=lenet_mnist_optuna",
        "hydra.sweeper.n_trials=3",
        "optimized_metric=val/iou",
        *synthetic_train_overrides(synthetic_mnist),
        *TOY,
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert line == (
        "Error: optimized_metric=val/iou is never logged; the validation metrics logged are "
        "val/acc, val/acc_top5, val/loss (sweep stopped)"
    )
    assert len(list(sweep_dir(tmp_path).glob("[0-9]*"))) == 1  # no second trial


# --- sweeper and launcher settings, checked before Hydra launches a job ------------------------

SEARCH = "hparams_search=lenet_mnist_optuna"


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        ([SEARCH, "hydra.sweeper.n_trials=0"],
         "hydra.sweeper.n_trials must be an integer in [1, 10000], got 0"),
        ([SEARCH, "optimized_metric=test/acc"],
         "optimized_metric must be a validation metric (val/...) or null, never a test metric, "
         "got 'test/acc'"),
        ([SEARCH, "optimized_metric=null"],
         "optimized_metric=null: hydra/sweeper=optuna needs the validation metric it optimises, "
         "e.g. optimized_metric=val/acc"),
        ([SEARCH, "hydra.sweeper.direction=sideways"],
         "hydra.sweeper.direction must be minimize or maximize, got 'sideways'"),
        ([SEARCH, "hydra.sweeper.direction=[maximize,minimize]"],
         "hydra.sweeper.direction must be minimize or maximize, got ['maximize', 'minimize']"),
        ([SEARCH, "hydra.sweeper.max_failure_rate=1.5"],
         "hydra.sweeper.max_failure_rate must be a number in [0, 1], got 1.5"),
        (["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=-5"],
         "hydra.launcher.timeout_min must be an integer >= 1, got -5"),
        (["hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=0"],
         "hydra.launcher.cpus_per_task must be an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_sweep_settings_that_would_fail_once_launched_are_refused_first(
    overrides: list[str], refusal: str, tmp_path: Path
) -> None:
    cfg = compose_config(overrides, tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError) as caught:
        check_sweep(cfg)
    assert str(caught.value) == refusal


def test_an_unknown_launcher_key_is_refused_naming_the_closest(tmp_path: Path) -> None:
    cfg = compose_config(
        ["hydra/launcher=submitit_slurm", "+hydra.launcher.partitoin=gpu"], tmp_path
    )
    GlobalHydra.instance().clear()
    with pytest.raises(ConfigError) as caught:
        check_sweep(cfg)
    line = str(caught.value)
    assert line.startswith(
        "hydra.launcher.partitoin is not an option of hydra/launcher=submitit_slurm (options: "
        "_target_, submitit_folder, timeout_min,"
    )
    assert line.endswith("; did you mean hydra.launcher.partition?")


@pytest.mark.parametrize(
    "overrides",
    [[SEARCH], ["hydra/launcher=submitit_local"], ["hydra/launcher=submitit_slurm"], []],
)
def test_the_shipped_sweeper_and_launchers_pass_the_check(
    overrides: list[str], tmp_path: Path
) -> None:
    cfg = compose_config(overrides, tmp_path)
    GlobalHydra.instance().clear()
    check_sweep(cfg)


def test_a_study_that_every_trial_would_refuse_stops_in_one_line_before_any_trial(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        SEARCH,
        "optimized_metric=test/acc",
        *synthetic_train_overrides(synthetic_mnist),
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: optimized_metric must be a validation metric (val/...) or null, never a test "
        "metric, got 'test/acc'"
    )
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("train/multiruns/*/[0-9]*"))  # no trial ran


@pytest.mark.slow
def test_submitit_local_runs_a_2_job_multirun(synthetic_mnist: Path, tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "hydra/launcher=submitit_local",
        "optimizer.lr=0.001,0.002",
        *synthetic_train_overrides(synthetic_mnist),
        *TOY,
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    directory = sweep_dir(tmp_path)
    assert sorted(job_metrics(directory)) == [0, 1]
    assert len(list((directory / ".submitit").glob("*/*_result.pkl"))) == 2
    for job in (0, 1):
        overrides = OmegaConf.load(directory / str(job) / ".hydra" / "overrides.yaml")
        assert f"optimizer.lr={(0.001, 0.002)[job]}" in overrides


def test_submitit_slurm_asks_one_task_per_gpu_the_cpus_and_a_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sbatch script submitit would submit, from our launcher config: submitit needs only an
    srun on the PATH to write it."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    cfg = compose_config(
        ["hydra/launcher=submitit_slurm", "trainer=ddp", "trainer.devices=4"], tmp_path
    )
    GlobalHydra.instance().clear()
    params = instantiate(cfg.hydra.launcher).params
    # As the plugin's launch() hands them to submitit.
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=tmp_path, slurm_max_num_timeout=params["max_num_timeout"]
    )
    base = set(OmegaConf.structured(BaseQueueConf))
    executor.update_parameters(
        **{
            key if key in base else f"slurm_{key}": value
            for key, value in params.items()
            if key not in ("submitit_folder", "max_num_timeout")
        }
    )
    script = executor._executor._make_submission_file_text("python train.py", "0")
    for line in (
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--nodes=1",
        "--cpus-per-task=9",
        "--time=240",
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {line}" in script
    assert params["max_num_timeout"] > 0  # a job at its time limit is requeued


def test_a_submitit_job_starts_afresh_and_once_requeued_resumes_from_its_last_checkpoint(
    train_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A requeued job runs again in its own directory, as submitted (ckpt_path=null): it resumes
    from the last.ckpt there, here with its epoch already done, so with nothing left to train
    and the weights as they were saved, whatever the seed."""
    monkeypatch.setenv(SUBMITIT_JOB, "slurm")
    train(train_cfg(*TOY), tmp_path)  # no last.ckpt yet: from scratch
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    train(train_cfg(*TOY, "seed=7"), tmp_path)
    again = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in saved.items():
        assert torch.equal(value, again[key]), key
