"""make gpu-check (benchmarks.gpu_check): one line and a non-zero exit where there is no CUDA,
and, rehearsed on the CPU at toy sizes (GPU_CHECK_DRY=1), every step run and every row in
summary.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO_ROOT


def gpu_check_command(out: Path, dry: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    """python -m benchmarks.gpu_check as make gpu-check runs it (a module, so not run_script)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("GPU_CHECK_DRY", None)
    if dry:
        env["GPU_CHECK_DRY"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT,
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA path")
def test_without_cuda_it_stops_at_once_with_one_line(tmp_path: Path) -> None:
    result = gpu_check_command(tmp_path / "bench", dry=False, timeout=120)
    assert result.returncode != 0
    [line] = (result.stdout + result.stderr).strip().splitlines()
    assert "no CUDA device" in line and "GPU_CHECK_DRY=1" in line
    assert not (tmp_path / "bench").exists()


def test_the_summary_lists_every_target_even_with_nothing_measured(tmp_path: Path) -> None:
    results = {
        "dry": False, "budget": 465.0, "seconds": 1.0, "environment": {},
        "pytest": gpu_check.pytest_result(tmp_path, tmp_path / "no.log"),
        "resnet18": [], "models": [], "imagenet": [], "lenet": {}, "mnist": {},
    }  # fmt: skip
    goals = gpu_check.targets(results)
    summary = gpu_check.render_summary(results, goals, [])
    for row in gpu_check.TARGET_ROWS:
        assert f"| {row} |" in summary
    assert "989.4 TFLOP/s" in summary
    assert [g.met for g in goals] == [False, None, None, None, None]


def test_a_missed_target_is_judged_at_the_fastest_options_and_against_timm(
    tmp_path: Path,
) -> None:
    def row(kind: str, options: str, rate: float, overhead: float | None = None) -> dict:
        return {"kind": kind, "options": options, "train_images_per_s": rate, "step_ms": 1.0,
                "tflops_per_step": 0.1, "device_type": "cuda", "batch_size": 256,
                "image_size": 224, "lightning_overhead": overhead,
                "peak_memory_mb": 9.0}  # fmt: skip

    results = {
        "dry": False, "budget": 465.0, "seconds": 1.0, "environment": {},
        "pytest": {"passed": 3, "failed": 0, "error": 0, "skipped": 0, "failures": [],
                   "source": "junit"},
        "resnet18": [row("zoo", "bf16", 12_000, 0.01), row("timm", "bf16", 11_000),
                     row("zoo", "bf16 + channels_last", 16_000, 0.05),
                     row("timm", "bf16 + channels_last", 17_000)],
        "models": [], "imagenet": [], "lenet": {}, "mnist": {},
    }  # fmt: skip
    tests, throughput, overhead, *_ = gpu_check.targets(results)
    assert tests.met is True
    assert throughput.met is False and "bf16 + channels_last" in throughput.measured
    assert throughput.profile_args == ("--channels-last",)
    assert overhead.met is False and "+5.0%" in overhead.measured
    summary = gpu_check.render_summary(results, [tests, throughput, overhead], [])
    assert "| resnet18 bf16 + channels_last | 256 | 224 | 16,000 |" in summary
    assert "0.94x" in summary and "1.33x" in summary  # ours / timm's; channels_last's gain


@pytest.mark.slow
def test_the_dry_rehearsal_runs_every_step_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = gpu_check_command(out, dry=True, timeout=3300)
    summary = (out / "summary.md").read_text()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    for row in (*gpu_check.TARGET_ROWS, "resnet18 bf16 + channels_last + compile",
                "ImageNet pipeline, decode=cpu", "lenet_mnist_fast, MNIST not resident",
                "vgg19 bf16 + channels_last", "alexnet bf16 + channels_last"):  # fmt: skip
        assert f"| {row} |" in summary, row
    assert "not measured" not in summary, summary
    # The CPU misses every GPU target: each row that has a profile got one.
    for profile in ("resnet18", "lightning", "lenet_fast", "imagenet_gpu"):
        assert (out / f"profile_{profile}.txt").is_file(), profile
