"""ResNet18 through train.py trainer=gpu with task.compile=true. A module of its own, sorted
early, so that under pytest-xdist its minute of compilation starts first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_for_metrics
from tests.gpu.helpers import CUDA, GPU, assert_trained_on_the_gpu, ten_steps

pytestmark = GPU


# Not in the CPU form: inductor compiles for minutes on a CPU.
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_resnet18_trains_compiled(synthetic_mnist: Path, tmp_path: Path) -> None:
    overrides = [*ten_steps("resnet18", synthetic_mnist), "task.compile=true"]
    result, metrics = run_for_metrics("train.py", tmp_path, *overrides, timeout=600)
    assert_trained_on_the_gpu(result.stdout + result.stderr, metrics)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_lenet_trains_compiled_with_cuda_graphs(synthetic_mnist: Path, tmp_path: Path) -> None:
    overrides = [*ten_steps("lenet", synthetic_mnist), "task.compile=reduce-overhead"]
    result, metrics = run_for_metrics("train.py", tmp_path, *overrides, timeout=600)
    assert_trained_on_the_gpu(result.stdout + result.stderr, metrics)
