"""Scale-out and speed tooling: DDP on CPU (gloo) in a subprocess, and the benchmark command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import run_script
from zoo import models
from zoo.tasks.base import count_flops
from zoo.tools import bench
from zoo.tools.summary import summarize
from zoo.training.run import train


def test_two_process_ddp_ends_with_identical_weights_and_one_checkpoint(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    result = run_script(
        "train.py",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.strategy.timeout.seconds=60",
        "trainer.max_epochs=1",
        f"data.data_dir={synthetic_mnist}",
        "data.verify=false",
        "data.val_size=100",
        "data.batch_size=32",
        "callbacks.progress_bar=null",
        "+callbacks.rank_weights._target_=tests.helpers.SaveWeightsPerRank",
        f"+callbacks.rank_weights.directory={weights}",
        f"paths.log_dir={tmp_path}",
        "test=false",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(weights / "rank0.pt", weights_only=True)
    rank1 = torch.load(weights / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    [run] = (tmp_path / "train" / "runs").iterdir()
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints


def test_ddp_inside_a_multirun_is_refused_clearly(synthetic_mnist: Path, tmp_path: Path) -> None:
    result = run_script(
        "train.py",
        "-m",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"data.data_dir={synthetic_mnist}",
        "data.verify=false",
        f"paths.log_dir={tmp_path}",
        timeout=120,
    )
    assert result.returncode != 0
    assert "multirun" in result.stderr and "DDP" in result.stderr


def test_bench_times_plain_and_lightning_loops_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    code = bench.main(
        ["--models", "lenet", "--device", "cpu", "--batch-size", "8", "--image-size", "32",
         "--warmup", "1", "--steps", "2", "--rounds", "2", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    [row] = json.loads(out.read_text())
    assert row["model"] == "lenet" and row["image_size"] == 32
    assert row["train_images_per_s"] > 0 and row["inference_images_per_s"] > 0
    assert row["lightning_images_per_s"] > 0 and row["lightning_overhead"] is not None
    # LeNet-5 on 3x32x32: 651,720 MACs = 1.3 MFLOPs forward per image; the backward pass
    # adds about twice that (less for conv1, whose input needs no gradient).
    assert 8 * 2.5e6 < row["tflops_per_step"] * 1e12 < 8 * 4.0e6
    assert row["mfu"] is None  # no known peak for a CPU


def test_bench_rejects_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--models", "lenet,nope"])
    assert exit_info.value.code != 0
    assert "unknown model(s) ['nope']" in capsys.readouterr().err


def test_bench_refuses_zero_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--models", "lenet", "--rounds", "0"])
    assert exit_info.value.code != 0
    assert "--rounds must be >= 1" in capsys.readouterr().err


# vgg*_bn: vgg* with batch_norm=True under torchvision's names, the same layers as test_summary's.
@pytest.mark.parametrize("name", [n for n in models.available() if not n.endswith("_bn")])
def test_counted_flops_are_twice_the_macs_forward_and_about_three_times_that_in_training(
    name: str,
) -> None:
    # GoogLeNet's auxiliary heads run only in training, where they would dominate at this size.
    spec = {"name": name, **({"aux_logits": False} if name == "googlenet" else {})}
    model = models.build(**spec)
    side = model.min_input_size
    shape = torch.Size((2, model.in_channels, side, side))
    macs = 2 * summarize(model, shape[1:]).total_macs  # summarize counts one image
    forward = count_flops(spec, shape, training=False)
    # torchinfo's MACs also count the bias additions and batch norms the FLOP counter leaves out.
    assert 0.97 * 2 * macs < forward <= 2 * macs
    # The backward pass costs about twice the forward one (less where no input gradient is due).
    assert 2.5 * forward < count_flops(spec, shape, training=True) <= 3 * forward


def test_training_logs_flops_per_second_for_mfu(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("trainer.max_epochs=1", "callbacks.throughput.window_size=2")
    train(cfg, tmp_path)
    scalars = set(EventAccumulator(str(tmp_path / "tensorboard")).Reload().Tags()["scalars"])
    # MFU (train/device/mfu) needs the device's peak, which Lightning knows for GPUs only.
    assert "train/device/flops_per_sec" in scalars, sorted(scalars)
