"""What a careless or hostile user could do to a training run and now can't: fill the disk mid-save,
start a second writer in a run directory, resume with another config, resume from damaged
weights; and what a first run no longer prints or leaves out."""

from __future__ import annotations

import csv
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from tests.conftest import REPO_ROOT, compose_config, run_script, synthetic_train_overrides
from tests.training.fault_tolerance_helpers import FullDiskCheckpointIO, PausingCheckpointIO
from zoo.core.errors import ConfigError
from zoo.models.loading import WeightsError
from zoo.tasks.base import count_flops
from zoo.tasks.build import build_task
from zoo.training.checkpoint_io import TEMP_GLOB, DiskFullError, remove_stale_temp_files
from zoo.training.resume import config_mismatch
from zoo.training.run import train
from zoo.training.run_lock import LOCK_NAME, RunDirectoryInUse
from zoo.training.summary import ModelSummary, forward_flops

TINY = ("trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
        "test=false", "logger=none", "scheduler=step")  # fmt: skip


@pytest.fixture(scope="module")
def trained(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory whose checkpoints/last.ckpt is LeNet-5 after two steps."""
    run_dir = tmp_path_factory.mktemp("trained")
    overrides = [*synthetic_train_overrides(synthetic_mnist), *TINY]
    train(compose_config(overrides, run_dir), run_dir)
    return run_dir


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


# A full disk ---------------------------------------------------------------------------------


def test_a_full_disk_mid_save_is_one_error_naming_the_file_and_the_last_whole_checkpoint(
    tmp_path: Path,
) -> None:
    io, target = FullDiskCheckpointIO(whole=1, room=100), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.zeros(1000)}, target)
    best = tmp_path / "epoch000.ckpt"
    with pytest.raises(DiskFullError) as refused:
        io.save_checkpoint({"step": 2, "weights": torch.ones(1000)}, best)
    assert str(refused.value).startswith(
        f"no space left on device while writing {best} (nothing half-written is left behind); "
        f"the last whole checkpoint is {target}: "
    )
    assert load(target)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


def test_a_full_disk_during_training_ends_train_py_with_that_line_and_a_nonzero_exit(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    plugin = "[{_target_:tests.training.fault_tolerance_helpers.FullDiskCheckpointIO,whole:1}]"
    result = run_script(
        "train.py",
        *synthetic_train_overrides(synthetic_mnist),
        *TINY,
        "callbacks.step_checkpoint.every_n_train_steps=1",
        f"trainer.plugins={plugin}",
        f"hydra.run.dir={run_dir}",
        timeout=120,
    )
    checkpoints = run_dir / "checkpoints"
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: no space left on device while writing {checkpoints / 'last.ckpt'} (nothing "
        f"half-written is left behind); the last whole checkpoint is {checkpoints / 'last.ckpt'}"
        ": free some space, then resume with ckpt_path=last"
    )
    assert load(checkpoints / "last.ckpt")["global_step"] == 1
    assert not list(checkpoints.glob(TEMP_GLOB))


def test_the_clean_up_of_killed_saves_leaves_a_save_under_way_alone(tmp_path: Path) -> None:
    io, target = PausingCheckpointIO(pause=1.5), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    stale = tmp_path / ".last.ckpt.0badc0de.tmp"  # what a killed save leaves
    stale.write_bytes(b"half a checkpoint")
    saving = threading.Thread(target=io.save_checkpoint, args=({"step": 2}, target))
    saving.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob(TEMP_GLOB))) < 2:
        assert time.monotonic() < deadline, "the save never started"
        time.sleep(0.01)

    assert remove_stale_temp_files(tmp_path) == [stale]
    [live] = tmp_path.glob(TEMP_GLOB)
    saving.join()
    assert not live.exists() and load(target) == {"step": 2}  # the live save went through


# One writer per run directory ----------------------------------------------------------------


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding tmp_path/run, as a train.py running there does."""
    code = (
        "import sys, time; from pathlib import Path; from zoo.training.run_lock import "
        "single_writer\nwith single_writer(Path(sys.argv[1])):\n print('held', flush=True)\n"
        " time.sleep(120)"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / "run")],
        stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    assert process.stdout is not None and process.stdout.readline() == "held\n"
    yield process
    process.kill()
    process.wait()


def test_a_second_train_py_in_a_run_directory_in_use_refuses_naming_the_holder(
    holder: subprocess.Popen[str], train_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    message = rf"{run_dir} is in use by another train.py \(pid {holder.pid} on .*\): wait for it"
    with pytest.raises(RunDirectoryInUse, match=message):
        train(train_cfg(*TINY, output_dir=run_dir), run_dir)
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK_NAME]  # nothing else written

    holder.kill()  # however the holder ends, the kernel releases its lock
    holder.wait()
    train(train_cfg(*TINY, output_dir=run_dir), run_dir)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# A resume checks its config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer=sgd", "optimizer.name='adam', this run has optimizer.name='sgd'"),
        ("optimizer.lr=0.5", "optimizer.lr=0.003, this run has optimizer.lr=0.5"),
        ("model=resnet18", "model.name='lenet', this run has model.name='resnet18'"),
        ("model.modern=true", "model.modern=False, this run has model.modern=True"),
        ("data.batch_size=64", "data.batch_size=128, this run has data.batch_size=64"),
        ("data.image_size=36", "data.image_size=None, this run has data.image_size=36"),
        ("scheduler=cosine", "scheduler.name='step', this run has scheduler.name='cosine'"),
    ],
)
def test_a_resume_with_another_config_is_refused_naming_the_key(
    override: str, key: str, trained: Path, train_cfg: Callable[..., DictConfig]
) -> None:
    last = trained / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    with pytest.raises(ConfigError) as refused:
        train(train_cfg(*TINY, "ckpt_path=last", override, output_dir=trained), trained)
    assert str(refused.value) == (
        f"{last} was trained with {key}: a resume continues the checkpoint's run unchanged. "
        "Resume without that override, or start a fresh run (without ckpt_path, in a new "
        "hydra.run.dir) to train with it"
    )
    assert last.stat().st_mtime_ns == before


def test_a_resume_may_change_how_the_optimizer_runs_but_not_what_it_computes() -> None:
    # A checkpoint from before zoo/configs/optimizer/adam.yaml set fused: true.
    saved = {"optimizer": {"name": "adam", "lr": 3e-3, "weight_decay": 0.0}}
    fused = {"optimizer": {**saved["optimizer"], "fused": True, "foreach": None}}
    assert config_mismatch(fused, saved) is None
    faster = {"optimizer": {**fused["optimizer"], "lr": 0.5}}
    assert config_mismatch(faster, saved) == ("optimizer.lr", 3e-3, 0.5)


def test_a_resumed_run_writes_its_config_beside_the_first(tmp_path: Path) -> None:
    def config_dir() -> str:
        return compose_config(["ckpt_path=last"], tmp_path).hydra.output_subdir

    assert config_dir() == ".hydra"
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("model: {name: lenet}\n")
    resumed = config_dir()
    assert resumed.startswith(".hydra/") and len(resumed) == len(".hydra/2026-12-02_04-10-00")


# Damaged weights in ckpt_path= -----------------------------------------------------------------

KEY = "model.features.0.weight"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda w: w.fill_(float("nan")), "holds NaN or infinite values"),
        (lambda w: w.fill_(float("inf")), "holds NaN or infinite values"),
        (lambda w: w.to(torch.int64), "is torch.int64, where LeNet5 holds torch.float32"),
        (lambda w: w > 0, "is torch.bool, where LeNet5 holds torch.float32"),
        (lambda w: w.to(torch.complex64), "is torch.complex64, where LeNet5 holds torch.float32"),
    ],
    ids=["nan", "inf", "int64", "bool", "complex"],
)
def test_damaged_weights_in_ckpt_path_are_refused_naming_the_tensor(
    damage: Callable[[torch.Tensor], torch.Tensor],
    message: str,
    trained: Path,
    train_cfg: Callable[..., DictConfig],
    tmp_path: Path,
) -> None:
    checkpoint = load(trained / "checkpoints" / "last.ckpt")
    checkpoint["state_dict"][KEY] = damage(checkpoint["state_dict"][KEY].clone())
    damaged = tmp_path / "damaged.ckpt"
    torch.save(checkpoint, damaged)
    with pytest.raises(WeightsError, match=rf"{damaged}: weight 'features.0.weight' {message}"):
        train(train_cfg(*TINY, f"ckpt_path={damaged}", output_dir=tmp_path / "run"), tmp_path)


# The first run's noise ---------------------------------------------------------------------------


def test_lightning_advertises_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    assert "GPU available" in caplog.text  # Lightning's own information stays
    assert "Tip" not in caplog.text and "litlogger" not in caplog.text


def test_the_model_summary_counts_the_flops_of_one_image(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = {"name": "lenet", "in_channels": 1, "num_classes": 10, "modern": False}
    module = build_task(spec, {"name": "adam", "lr": 1e-3}, None, {"name": "mnist"})
    flops = forward_flops(module, 32)
    assert flops["model"] == count_flops(spec, torch.Size([1, 1, 32, 32]), training=False) > 0
    assert flops["model"] == flops["model.features"] + flops["model.classifier"]

    class Trainer:  # what the callback reads of one
        datamodule = type("DataModule", (), {"hparams": {"image_size": 32}})()
        is_global_zero = True
        strategy = None

    ModelSummary(max_depth=1).on_fit_start(Trainer(), module)
    assert "Total FLOPs: 833 K" in capsys.readouterr().out


def test_a_run_shorter_than_the_logging_interval_logs_the_loss_every_epoch(
    train_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    overrides = ("trainer.max_epochs=2", "trainer.limit_train_batches=3", "test=false",
                 "trainer.limit_val_batches=1", "task.log_images=0", "logger=csv",
                 "trainer.log_every_n_steps=50")  # fmt: skip
    train(train_cfg(*overrides), tmp_path)
    with (tmp_path / "csv" / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    epochs = [row["epoch"] for row in rows if row.get("train/loss_epoch")]
    assert epochs == ["0", "1"]
