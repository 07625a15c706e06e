"""Shared fixtures: Hydra configs composed as train.py composes them (after
lightning-hydra-template's conftest), and small synthetic MNIST-format IDX files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from zoo.core.config import compose_config
from zoo.core.logs import quiet_library_noise
from zoo.data.mnist.files import raw_dir, write_idx

REPO_ROOT = Path(__file__).resolve().parents[1]

# Keep tests to the two cores the CI machine has, and reproducible; trainer.threads=auto then
# leaves them as they are, in the tests' trainers and in the runs they start.
torch.set_num_threads(2)
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def quiet_as_the_entry_points() -> None:
    """The in-process runs print what train.py and evaluate.py print: their filters, installed
    within each test (pytest restores the warning filters of the collection phase after it)."""
    quiet_library_noise()


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable stand-ins for digits: class k is a bright bar at its own height, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, 28, 28))
    for i, label in enumerate(labels):
        row = 2 + 2 * label
        images[i, row : row + 3, 4:24] = 255
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_synthetic_mnist(data_dir: Path, train: int = 640, test: int = 200) -> Path:
    target = raw_dir(data_dir)
    target.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(target / f"{split}-images-idx3-ubyte", images)
        write_idx(target / f"{split}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding 640 training and 200 test images in MNIST's IDX format."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("mnist"))


# experiment=unet_mnist at toy sizes: 32x32 canvases, a U-Net of base width 4.
UNET_MNIST_TOY = (
    "experiment=unet_mnist",
    "model.base_width=4",
    "data.image_size=32",
    "data.train_canvases=16",
    "data.val_canvases=8",
    "data.test_canvases=8",
    "data.batch_size=8",
)


def synthetic_train_overrides(data_dir: Path) -> list[str]:
    """train.yaml overrides for quick, quiet CPU runs on the synthetic MNIST in data_dir."""
    return [
        f"data.data_dir={data_dir}",
        "data.verify=false",
        "data.val_size=100",
        "data.num_workers=0",
        "callbacks.progress_bar=null",
        "trainer.accelerator=cpu",
        "trainer.log_every_n_steps=1",
        "trainer.enable_model_summary=false",
    ]


@pytest.fixture
def train_cfg(synthetic_mnist: Path, tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose the train config on synthetic MNIST, writing into tmp_path; pass overrides."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        base = synthetic_train_overrides(synthetic_mnist)
        return compose_config(base + list(overrides), output_dir or tmp_path)

    yield make
    GlobalHydra.instance().clear()


def run_script(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run train.py / evaluate.py as a user would, in a subprocess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=REPO_ROOT,
    )


def start_script(
    script: str, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """train.py / evaluate.py in the background, its output in ``log``, as from a terminal:
    whatever started the tests, a background job of a non-interactive shell (a CI script's
    ``cmd &``) runs with SIGINT ignored, which the script, like any program, would inherit and
    keep."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    with log.open("w") as output:
        return subprocess.Popen(
            [sys.executable, str(REPO_ROOT / script), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
            cwd=REPO_ROOT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


def run_for_metrics(
    script: str, log_dir: Path, *args: str, timeout: float = 300
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run train.py / evaluate.py with ``paths.log_dir=log_dir``; require success, and read the
    run's metrics.json."""
    result = run_script(script, *args, f"paths.log_dir={log_dir}", timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    [metrics_file] = (log_dir / Path(script).stem / "runs").glob("*/metrics.json")
    return result, json.loads(metrics_file.read_text())
