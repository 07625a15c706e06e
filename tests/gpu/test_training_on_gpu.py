"""Training on the GPU: every registered model through train.py trainer=gpu (bf16-mixed,
channels_last), and MNIST resident on the GPU. (ResNet18 compiled: test_compile_on_gpu.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import compose_config, run_for_metrics, synthetic_train_overrides
from tests.gpu.callbacks import RecordDataDevices
from tests.gpu.helpers import CUDA, DEVICE, GPU, assert_trained_on_the_gpu, on_gpu, ten_steps
from zoo import models
from zoo.training.run import train

pytestmark = GPU

# On the CPU (the rehearsal's form), one model of each kind: the rest differ from these only on
# the GPU, and each train.py run costs the CPU half a minute.
CPU_FORM_MODELS = {"lenet", "resnet18", "unet"}


@pytest.mark.parametrize("name", models.available())
def test_every_model_trains_ten_steps_in_bf16_and_channels_last(
    name: str, synthetic_mnist: Path, tmp_path: Path
) -> None:
    if not CUDA and name not in CPU_FORM_MODELS:
        pytest.skip(f"CPU form: only {sorted(CPU_FORM_MODELS)}")
    result, metrics = run_for_metrics("train.py", tmp_path, *ten_steps(name, synthetic_mnist))
    assert_trained_on_the_gpu(result.stdout + result.stderr, metrics)


@pytest.mark.parametrize("resident", [True, False])
def test_mnist_is_resident_on_the_gpu_unless_turned_off(
    resident: bool, synthetic_mnist: Path, tmp_path: Path
) -> None:
    overrides = [
        *on_gpu(synthetic_train_overrides(synthetic_mnist)),
        f"data.device_resident={str(resident).lower()}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=1",
        "test=false",
        "logger=none",
        "+callbacks.devices._target_=tests.gpu.callbacks.RecordDataDevices",
    ]
    RecordDataDevices.seen.clear()
    try:
        train(compose_config(overrides, tmp_path), tmp_path)
    finally:
        GlobalHydra.instance().clear()
    # Resident: the split lives on the GPU and each batch is one index into it there. Not
    # resident: the split stays on the host and each batch is copied over.
    split = DEVICE.type if resident else "cpu"
    assert RecordDataDevices.seen == [(split, DEVICE.type)] * 3
