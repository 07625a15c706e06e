"""evaluate.py model=<name> model.weights=<weights> data=<name>: published weights evaluated
without a checkpoint, on a generated ImageNet-layout tree of all 1000 classes (one tiny image
each), with torchvision's class names and the weights' preprocessing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.conftest import compose_config
from tests.pretrained import Publisher
from zoo import models
from zoo.core.errors import ConfigError
from zoo.evaluation.run import evaluate
from zoo.models.loading import WeightsError
from zoo.tasks.build import build_task


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def imagenet_1000(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/{train,val}/<wnid>/ for 1000 wnids, one 12x12 JPEG in each (links to 8 files)."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    originals = []
    for i in range(8):
        originals.append(root / f"{i}.JPEG")
        pixels = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(originals[-1], "JPEG")
    for c in range(1000):
        for split in ("train", "val"):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            os.link(originals[c % 8], folder / f"{split}_{c}.JPEG")
    return root


@pytest.mark.slow  # 1000 images through ResNet-18: ~12 s on two shared cores
def test_published_weights_evaluate_without_a_checkpoint(
    imagenet_1000: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Publisher(tmp_path / "torch_home", monkeypatch)("resnet18")
    cfg = compose_config(
        [
            "model=resnet18",
            "model.weights=IMAGENET1K_V1",
            "data=imagenet",
            f"data.root={imagenet_1000}",
            "data.image_size=32",
            "data.num_workers=0",
            "data.batch_size=500",
            "trainer.accelerator=cpu",
            "logger=none",
            "worst_images=0",
        ],
        tmp_path / "evaluate",
        config_name="evaluate",
    )
    report = evaluate(cfg, tmp_path / "evaluate")
    assert report["samples"] == 1000 and 0 <= report["acc"] <= 1
    assert report["pretrained"]["file"] == "resnet18-f37072fd.pth"
    assert list(report["per_class"])[:2] == ["tench", "goldfish"]  # torchvision's categories


def test_without_a_checkpoint_the_model_and_dataset_must_be_named(tmp_path: Path) -> None:
    for overrides, message in (
        ([], "evaluate.py needs ckpt_path=<checkpoint>, or model=<name> model.weights="),
        (["model=resnet18", "model.weights=IMAGENET1K_V1"], "name the dataset too, data=<name>"),
        (["model=resnet18", "data=imagenet"], "model.weights is null"),
        (["model=resnet18", "ckpt_path=x.ckpt"], "give ckpt_path= or model="),
    ):
        GlobalHydra.instance().clear()
        cfg = compose_config(overrides, tmp_path, config_name="evaluate")
        with pytest.raises(ConfigError, match=message):
            evaluate(cfg, tmp_path / "out")


def test_weights_that_do_not_fill_the_network_evaluate_nothing_but_fine_tune(
    tmp_path: Path,
) -> None:
    """A 7-class head on a 10-class dataset: train.py fine-tunes a fresh head, but evaluating
    one would measure a network nobody trained."""
    path = tmp_path / "seven.pth"
    torch.save(models.build("lenet", num_classes=7, in_channels=1).state_dict(), path)
    spec = {"name": "lenet", "weights": str(path), "num_classes": 10, "in_channels": 1}
    module = build_task(spec, {"name": "adam"}, None, None)
    assert module.fresh_tensors == ["classifier.4.weight", "classifier.4.bias"]
    overrides = ["model=lenet", f"model.weights={path}", "data=mnist", "logger=none"]
    cfg = compose_config(overrides, tmp_path / "evaluate", config_name="evaluate")
    with pytest.raises(WeightsError) as refused:
        evaluate(cfg, tmp_path / "evaluate")
    assert str(refused.value) == (
        f"model.weights={path} does not fill LeNet5 with 10 classes: 2 tensors "
        "(classifier.4.weight, classifier.4.bias) would keep their random initialisation, and "
        "evaluating them measures a network nobody trained; fine-tune it with train.py first, "
        "or give weights for these classes"
    )
