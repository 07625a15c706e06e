"""train.py: every classifier trains through its experiment config; logs, checkpoints, resume,
multirun and bad input behave as a user expects."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO_ROOT, run_for_metrics, run_script
from zoo import models
from zoo.core.config import CONFIG_DIR
from zoo.core.errors import ConfigError
from zoo.core.trainer import lightning_defaults
from zoo.training.run import train

# vgg11_bn ... vgg19_bn are vgg11 ... vgg19 with batch norm, under torchvision's names for its
# weights: experiment=vgg11_mnist ... vgg19_mnist train them.
CLASSIFIERS = [
    name
    for name in models.available()
    if models.MODELS.get(name).task == "classification" and not name.endswith("_bn")
]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_runs_its_mnist_experiment(name: str, train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        f"experiment={name}_mnist",
        "debug=fast_dev_run",
        "data.batch_size=4",
        "data.eval_batch_size=4",
    )
    assert cfg.model.name.removesuffix("_bn") == name
    metrics = train(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_the_fast_recipe_trains_without_figures_or_sanity_check(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("experiment=lenet_mnist_fast", "trainer.max_epochs=1")
    assert cfg.model.modern and cfg.data.distortion is not None
    assert (cfg.trainer.num_sanity_val_steps, cfg.task.log_images) == (0, 0)
    metrics = train(cfg, tmp_path)
    assert metrics["test/acc"] > 0.1
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert "val/predictions" not in events.Tags()["images"]


def config_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "choice",
    [f"optimizer={o}" for o in config_options("optimizer")]
    + [f"scheduler={s}" for s in config_options("scheduler")],
)
def test_every_optimizer_and_scheduler_config_trains(
    choice: str, train_cfg, tmp_path: Path
) -> None:
    cfg = train_cfg(
        choice, "trainer.max_epochs=2",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false",
        "logger=none", "task.channels_last=true",
    )  # fmt: skip
    metrics = train(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_debug_fast_dev_run_runs_one_batch_of_train_val_and_test(train_cfg, tmp_path: Path) -> None:
    metrics = train(train_cfg("debug=fast_dev_run", "logger=none"), tmp_path)
    assert {"train/loss", "val/loss", "test/loss", "test/acc"} <= set(metrics)
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert not (tmp_path / "checkpoints").exists()  # tested on the weights in memory


def test_debug_overfit_memorises_a_few_fixed_batches(train_cfg, tmp_path: Path) -> None:
    metrics = train(train_cfg("debug=overfit", "trainer.max_epochs=40", "logger=none"), tmp_path)
    assert metrics["train/acc"] == 1.0


def test_fit_then_test_logs_scalars_images_and_keeps_best_and_last(
    train_cfg, tmp_path: Path
) -> None:
    cfg = train_cfg(
        "trainer.max_epochs=2", "optimizer.lr=0.01", "callbacks.throughput.window_size=4"
    )
    metrics = train(cfg, tmp_path)

    # The synthetic digits are easy: a real fit gets most of them right.
    assert metrics["test/acc"] > 0.5
    # val/acc: the best, what sweeps optimise (optimized_metric).
    assert set(metrics) == {"test/loss", "test/acc", "test/acc_top5", "val/acc", "fit_seconds"}
    assert 0 < metrics["fit_seconds"] < 600
    checkpoints = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2

    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_top5", "lr-Adam"):
        assert tag in scalars, f"{tag} missing from {sorted(scalars)}"
    assert any("samples_per_sec" in tag for tag in scalars), sorted(scalars)
    assert "val/predictions" in events.Tags()["images"]
    assert (tmp_path / "tensorboard" / "hparams.yaml").is_file()


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as file:
        return list(csv.DictReader(file))


def test_the_step_loss_is_logged_at_its_interval_and_the_epoch_metrics_at_epoch_ends(
    train_cfg, tmp_path: Path
) -> None:
    # 540 training digits at batch 128: 5 steps an epoch, steps 0-9; the loggers write at
    # every second one.
    cfg = train_cfg("trainer.max_epochs=2", "trainer.log_every_n_steps=2", "logger=csv")
    train(cfg, tmp_path)
    rows = csv_rows(tmp_path)
    assert [int(row["step"]) for row in rows if row["train/loss"]] == [1, 3, 5, 7, 9]
    epochs = [row for row in rows if row["train/loss_epoch"]]
    assert [int(row["epoch"]) for row in epochs] == [0, 1]
    assert all(0 <= float(row["train/acc"]) <= 1 for row in epochs)
    assert len([row for row in rows if row["val/acc"]]) == 2
    assert len([row for row in rows if row["test/acc"]]) == 1


def test_the_epoch_loss_is_the_batch_weighted_mean_of_every_step_loss(
    train_cfg, tmp_path: Path
) -> None:
    train(train_cfg("trainer.max_epochs=1", "logger=csv", "test=false"), tmp_path)  # every step
    rows = csv_rows(tmp_path)
    losses = [float(row["train/loss"]) for row in rows if row["train/loss"]]
    [epoch] = [float(row["train/loss_epoch"]) for row in rows if row["train/loss_epoch"]]
    sizes = [128, 128, 128, 128, 540 - 4 * 128]
    assert len(losses) == len(sizes)
    mean = sum(loss * size for loss, size in zip(losses, sizes, strict=True)) / sum(sizes)
    assert epoch == pytest.approx(mean, rel=1e-6)


def test_trains_without_any_logger(train_cfg, tmp_path: Path) -> None:
    metrics = train(
        train_cfg("logger=none", "trainer.max_epochs=1", "trainer.limit_train_batches=2"), tmp_path
    )
    assert "test/acc" in metrics
    assert not (tmp_path / "tensorboard").exists()


def test_checkpoints_hold_plain_data_and_load_weights_only(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("trainer.max_epochs=1", "test=false"), tmp_path)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    hparams = ckpt["hyper_parameters"]
    assert hparams["model"] == {
        "name": "lenet",
        "in_channels": 1,
        "num_classes": 10,
        "modern": False,
    }
    assert hparams["data"]["name"] == "mnist" and hparams["data"]["image_size"] is None
    assert ckpt["datamodule_hyper_parameters"]["image_size"] == 32


def test_resume_from_last_continues_to_the_step_of_an_uninterrupted_run(
    train_cfg, tmp_path: Path
) -> None:
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    common = ("test=false", "scheduler=step")
    train(train_cfg("trainer.max_epochs=3", *common, output_dir=straight_dir), straight_dir)
    train(train_cfg("trainer.max_epochs=2", *common, output_dir=resumed_dir), resumed_dir)
    resumed = train_cfg("trainer.max_epochs=3", *common, "ckpt_path=last", output_dir=resumed_dir)
    train(resumed, resumed_dir)

    def state(run: Path) -> tuple[int, int]:
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        return ckpt["epoch"], ckpt["global_step"]

    batches_per_epoch = -(-(640 - 100) // 128)
    assert state(resumed_dir) == state(straight_dir)
    assert state(straight_dir)[1] == 3 * batches_per_epoch


def test_extending_a_finished_onecycle_schedule_is_a_clear_error(train_cfg, tmp_path: Path) -> None:
    train(train_cfg("trainer.max_epochs=5", "test=false", "scheduler=onecycle"), tmp_path)
    longer = train_cfg("trainer.max_epochs=6", "scheduler=onecycle", "ckpt_path=last")
    with pytest.raises(ConfigError, match="planned for 25 steps, this run needs 30"):
        train(longer, tmp_path)


def test_resume_without_a_checkpoint_is_an_error_not_a_fresh_run(train_cfg, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no .*last\.ckpt"):
        train(train_cfg("ckpt_path=last"), tmp_path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be an integer >= 1, got 0"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a number > 0, got -0.1"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be an integer >= 1, got 0"),
        ("trainer.max_epochs=abc", "trainer.max_epochs must be an integer >= 1, got 'abc'"),
        ("data.image_size=16", r"data.image_size=16: .*LeNet5: image_size must be"),
        ("model.num_classes=0", "num_classes must be an integer >= 1"),
        ("task.label_smoothing=1.5", r"task.label_smoothing must be a number in \[0, 1\)"),
        ("data.val_size=-5", r"data.val_size must be an integer in \(0, 60000\).*got -5"),
        ("data.val_size=60000", r"data.val_size must be an integer in \(0, 60000\)"),
        ("trainer.accumulate_grad_batches=0", "accumulate_grad_batches must be an integer >= 1"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps must be an integer >= 1"),
        ("trainer.check_val_every_n_epoch=0", "check_val_every_n_epoch must be an integer >= 1"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval must be a number of"),
        ("trainer.gradient_clip_val=-1", "trainer.gradient_clip_val must be a number >= 0"),
        ("trainer.min_epochs=20", "trainer.min_epochs=20 is more than trainer.max_epochs=15"),
        ("+optimizer.betas=[0.9,1.5]", r"optimizer.betas must be two numbers in \[0, 1\)"),
        ("trainer.devices=0", r"trainer: `Trainer\(devices=0\)` value is not a valid input"),
        ("model=unet", "'unet' is a segmentation network, but data=mnist holds classification"),
        ("data=mnist_segmentation", "'lenet' is a classification network, but data=mnist_seg"),
    ],
)
def test_impossible_values_fail_before_any_data_is_loaded(
    override: str, message: str, train_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_data(*args: object, **kwargs: object) -> None:
        raise AssertionError("data was loaded before the config was checked")

    monkeypatch.setattr("zoo.data.mnist.mnist.ensure_mnist", no_data)
    with pytest.raises(ConfigError, match=message):
        train(train_cfg(override), tmp_path)


def test_an_impossible_value_on_the_command_line_exits_2_with_one_clear_message(
    tmp_path: Path,
) -> None:
    """Through Hydra's job, the run's own check (unknown keys and options: test_cli.py)."""
    result = run_script("train.py", "data.batch_size=-4", f"paths.log_dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    assert "data.batch_size must be an integer >= 1, got -4" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_trains_each_model_in_its_own_directory(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        "-m",
        "model=lenet,resnet18",
        "data.image_size=32",
        f"data.data_dir={synthetic_mnist}",
        "data.verify=false",
        "data.val_size=100",
        "debug=fast_dev_run",
        "trainer.accelerator=cpu",
        f"paths.log_dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted((tmp_path / "train" / "multiruns").glob("*/*/.hydra/config.yaml"))
    assert [OmegaConf.load(p).model.name for p in runs] == ["lenet", "resnet18"]


def test_every_trainer_argument_is_a_plain_override(train_cfg) -> None:
    arguments = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    # logger and callbacks are config groups of their own.
    assert arguments - {"logger", "callbacks"} <= set(train_cfg().trainer)


def test_the_trainer_config_lists_only_what_the_zoo_changes() -> None:
    written = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml"))
    written.pop("defaults")
    unchanged = {k for k, v in written.items() if lightning_defaults().get(k, object()) == v}
    assert unchanged == {"accelerator"}  # kept in sight: "auto" is what users change most


def test_data_dir_follows_zoo_data_dir(train_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOO_DATA_DIR", "/somewhere/mnist")
    assert train_cfg().paths.data_dir == "/somewhere/mnist"
    monkeypatch.delenv("ZOO_DATA_DIR")
    assert train_cfg().paths.data_dir == str(REPO_ROOT / "data")


@pytest.mark.slow
def test_the_fast_recipe_reaches_99_percent_on_real_mnist(tmp_path: Path) -> None:
    """The GPU time-to-accuracy recipe (docs/benchmarks.md); here only its accuracy is checked.
    The README's main command runs as the README prints it in tests/test_docs.py."""
    _, metrics = run_for_metrics(
        "train.py",
        tmp_path,
        "experiment=lenet_mnist_fast",
        "callbacks.progress_bar=null",
        timeout=1500,
    )
    assert metrics["test/acc"] >= 0.99, metrics
