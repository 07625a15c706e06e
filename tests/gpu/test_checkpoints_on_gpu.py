"""Checkpoints across devices: trained on the GPU and evaluated on the CPU, and the reverse; and
evaluate.py on a GPU checkpoint with attack=fgsm and with export=onnx."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import compose_config, run_for_metrics, run_script, synthetic_train_overrides
from tests.gpu.helpers import DEVICE, GPU, GPU_TRAINER, on_gpu
from zoo.evaluation.checkpoint import load_checkpoint
from zoo.evaluation.run import evaluate
from zoo.training.run import train

pytestmark = GPU

# bf16 on one side, fp32 on the other: a few of the 200 test digits may flip.
ACROSS_PRECISIONS = 0.02


@dataclass
class Trained:
    ckpt: Path  # the best checkpoint, the one training tested
    metrics: dict[str, float]  # training's test metrics


def train_lenet(data_dir: Path, run_dir: Path, gpu: bool) -> Trained:
    """LeNet-5 for two epochs on the synthetic MNIST, as tests/evaluation's fixture trains it,
    on the GPU (bf16-mixed) or the CPU (fp32)."""
    overrides = synthetic_train_overrides(data_dir)
    overrides = on_gpu(overrides) if gpu else overrides
    overrides += ["trainer.max_epochs=2", "optimizer.lr=0.002", "logger=none"]
    try:
        metrics = train(compose_config(overrides, run_dir), run_dir)
    finally:
        GlobalHydra.instance().clear()
    [best] = [p for p in (run_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    return Trained(best, metrics)


@pytest.fixture(scope="module")
def on_the_gpu(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_lenet(synthetic_mnist, tmp_path_factory.mktemp("gpu"), gpu=True)


@pytest.fixture(scope="module")
def on_the_cpu(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return train_lenet(synthetic_mnist, tmp_path_factory.mktemp("cpu"), gpu=False)


def evaluate_on(trained: Trained, data_dir: Path, output_dir: Path, *device: str) -> dict:
    overrides = [f"ckpt_path={trained.ckpt}", f"paths.data_dir={data_dir}", "logger=none",
                 "trainer.enable_progress_bar=false", *device]  # fmt: skip
    try:
        return evaluate(compose_config(overrides, output_dir, config_name="evaluate"), output_dir)
    finally:
        GlobalHydra.instance().clear()


def stored_on(ckpt: Path) -> set[str]:
    """The devices of a checkpoint's weights, as saved (no map_location: where they were)."""
    state = torch.load(ckpt, weights_only=True)
    return {tensor.device.type for tensor in state["state_dict"].values()}


def test_a_gpu_checkpoint_evaluates_on_the_cpu(
    on_the_gpu: Trained, synthetic_mnist: Path, tmp_path: Path
) -> None:
    report = evaluate_on(on_the_gpu, synthetic_mnist, tmp_path, "trainer.accelerator=cpu")
    assert report["precision"] == "32-true"
    assert report["acc"] == pytest.approx(on_the_gpu.metrics["test/acc"], abs=ACROSS_PRECISIONS)


def test_a_cpu_checkpoint_evaluates_on_the_gpu(
    on_the_cpu: Trained, synthetic_mnist: Path, tmp_path: Path
) -> None:
    assert stored_on(on_the_cpu.ckpt) == {"cpu"}
    report = evaluate_on(on_the_cpu, synthetic_mnist, tmp_path, *GPU_TRAINER)
    assert report["precision"] == "bf16-mixed"
    assert report["acc"] == pytest.approx(on_the_cpu.metrics["test/acc"], abs=ACROSS_PRECISIONS)


def test_evaluate_py_attacks_and_exports_a_gpu_checkpoint(
    on_the_gpu: Trained, synthetic_mnist: Path, tmp_path: Path
) -> None:
    common = (f"ckpt_path={on_the_gpu.ckpt}", f"paths.data_dir={synthetic_mnist}", "logger=none",
              "trainer.enable_progress_bar=false", *GPU_TRAINER)  # fmt: skip
    _, report = run_for_metrics("evaluate.py", tmp_path / "fgsm", *common, "attack=fgsm")
    fgsm: dict[str, Any] = report["fgsm"]
    assert fgsm["eps"][0] == 0 and fgsm["samples"] == 200
    # At eps 0 the attack leaves the digits as they are.
    assert fgsm["acc"][0] == pytest.approx(report["acc"], abs=0.01)
    assert fgsm["acc"][-1] < fgsm["acc"][0]

    result = run_script("evaluate.py", *common, "export=onnx", f"paths.log_dir={tmp_path / 'onnx'}")
    assert result.returncode == 0, result.stderr[-3000:]
    [path] = (tmp_path / "onnx" / "evaluate" / "runs").glob("*/model.onnx")
    import onnxruntime

    model = load_checkpoint(on_the_gpu.ckpt).model.cpu().eval()
    images = torch.randn(7, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"images": images.numpy()})
    with torch.inference_mode():
        np.testing.assert_allclose(logits, model(images).numpy(), rtol=1e-4, atol=1e-5)


def test_the_gpu_checkpoint_holds_gpu_tensors(on_the_gpu: Trained) -> None:
    """So that the first test above loads weights that were saved on the GPU."""
    assert stored_on(on_the_gpu.ckpt) == {DEVICE.type}
