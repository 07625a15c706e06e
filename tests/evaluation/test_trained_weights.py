"""evaluate.py model=lenet model.weights=MNIST_V1: the zoo's own weights evaluated without a
checkpoint and without data=, on the data config their card holds, as a checkpoint of them
would be (stand-ins on synthetic MNIST: tests/trained.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import compose_config, synthetic_digits
from tests.trained import Shipper
from zoo import models
from zoo.core.errors import ConfigError
from zoo.data.mnist.mnist import MNIST_MEAN, MNIST_STD
from zoo.evaluation.run import evaluate


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


@pytest.fixture
def ship(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Shipper:
    return Shipper(tmp_path / "trained", monkeypatch)


def run(tmp_path: Path, synthetic_mnist: Path, *overrides: str) -> dict:
    cfg = compose_config(
        [
            *overrides,
            f"paths.data_dir={synthetic_mnist}",
            "+data.verify=false",
            "trainer.accelerator=cpu",
            "logger=none",
            "worst_images=0",
        ],
        tmp_path / "evaluate",
        config_name="evaluate",
    )
    return evaluate(cfg, tmp_path / "evaluate")


def test_the_zoos_weights_evaluate_on_their_cards_data(
    ship: Shipper, synthetic_mnist: Path, tmp_path: Path
) -> None:
    ship("MNIST_V1")
    report = run(tmp_path, synthetic_mnist, "model=lenet", "model.weights=MNIST_V1")
    assert (report["dataset"], report["image_size"], report["samples"]) == ("mnist", 32, 200)
    assert report["pretrained"]["weights"] == "MNIST_V1"
    # The same figure from the network and the test digits, padded and normalised by hand.
    images, labels = (torch.from_numpy(array) for array in synthetic_digits(200, seed=1))
    pixels = torch.nn.functional.pad(images.float().unsqueeze(1) / 255, (2, 2, 2, 2))
    network = models.build("lenet", weights="MNIST_V1").eval()
    with torch.no_grad():
        predictions = network((pixels - MNIST_MEAN) / MNIST_STD).argmax(dim=1)
    assert report["acc"] == pytest.approx((predictions == labels.long()).float().mean().item())


def test_the_segmentation_set_evaluates_on_its_canvases(
    ship: Shipper, synthetic_mnist: Path, tmp_path: Path
) -> None:
    ship("MNIST_SEGMENTATION_V1")
    report = run(tmp_path, synthetic_mnist, "model=unet", "model.weights=DEFAULT")
    assert (report["dataset"], report["image_size"]) == ("mnist_segmentation", 32)
    assert report["pretrained"]["weights"] == "MNIST_SEGMENTATION_V1"
    assert {"miou", "dice", "pixel_acc"} <= set(report)


def test_predictions_on_the_zoos_weights_need_no_checkpoint(
    ship: Shipper, synthetic_mnist: Path, tmp_path: Path
) -> None:
    ship("MNIST_ROBUST_V1")
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(image)
    weights = ("model=lenet", "model.weights=MNIST_ROBUST_V1")
    report = run(tmp_path, synthetic_mnist, *weights, f"predict={image}")
    assert report["model"]["modern"] is True
    [prediction] = report["predictions"]
    assert {c["class"] for c in prediction["top_k"]} <= {str(digit) for digit in range(10)}


def test_other_weights_still_need_the_dataset_named(tmp_path: Path) -> None:
    cfg = compose_config(
        ["model=resnet18", "model.weights=IMAGENET1K_V1"], tmp_path, config_name="evaluate"
    )
    with pytest.raises(ConfigError, match="model=resnet18: name the dataset too, data=<name>"):
        evaluate(cfg, tmp_path / "out")
