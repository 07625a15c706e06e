"""What the GPU tests share: where they run, and the overrides that put train.py and
evaluate.py on the GPU (the callbacks they inject are in tests/gpu/callbacks.py).

They need CUDA, and are skipped without it, unless ``ZOO_GPU_TESTS_ON_CPU=1`` (the CPU rehearsal
of ``make gpu-check``) runs the same code on the CPU: ``trainer=gpu`` with
``trainer.accelerator=cpu``, so that a test's own mistakes show before GPU time is spent on them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from tests.conftest import UNET_MNIST_TOY, synthetic_train_overrides
from zoo import models

CUDA = torch.cuda.is_available()
ON_CPU = not CUDA and os.environ.get("ZOO_GPU_TESTS_ON_CPU") == "1"
DEVICE = torch.device("cuda" if CUDA else "cpu")

# Every module's pytestmark: the marker, and the skip without CUDA.
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not (CUDA or ON_CPU), reason="needs a CUDA GPU (ZOO_GPU_TESTS_ON_CPU=1: the CPU form)"
    ),
]

# trainer=gpu (bf16-mixed), on the CPU in the CPU form.
GPU_TRAINER = ("trainer=gpu",) if CUDA else ("trainer=gpu", "trainer.accelerator=cpu")


def on_gpu(overrides: Iterable[str]) -> list[str]:
    """``overrides`` (conftest's CPU ones, say) with trainer=gpu for their accelerator."""
    kept = [o for o in overrides if not o.startswith("trainer.accelerator=")]
    return [*kept, *GPU_TRAINER]


STEPS = 10


def ten_steps(name: str, data_dir: Path) -> list[str]:
    """train.py overrides: STEPS training steps of ``name`` on the synthetic MNIST, on the GPU in
    bf16 with channels_last, one validation batch, no test."""
    common = [
        *on_gpu(synthetic_train_overrides(data_dir)),
        "task.channels_last=true",
        "trainer.max_epochs=1",
        f"trainer.limit_train_batches={STEPS}",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=none",
    ]
    if models.MODELS.get(name).task == "segmentation":
        # Enough canvases for STEPS batches of 8.
        return [*common, *UNET_MNIST_TOY, f"data.train_canvases={8 * STEPS}"]
    spec = models.input_spec(name, in_channels=1, num_classes=10)
    size = spec.native if spec.exact else max(32, spec.minimum)
    return [
        *common,
        f"model={name}",
        f"data.image_size={size}",
        "data.resize=bilinear",
        "data.batch_size=16",
        "data.eval_batch_size=16",
    ]


def assert_trained_on_the_gpu(output: str, metrics: dict) -> None:
    assert torch.isfinite(torch.tensor(metrics["train/loss"])), metrics
    # Lightning's own report of the device it picked.
    assert f"GPU available: {CUDA}" in output and f"used: {CUDA}" in output, output[-3000:]
