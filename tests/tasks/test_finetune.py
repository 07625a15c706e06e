"""Fine-tuning (task.finetune.freeze, .backbone_lr_scale, .norm_weight_decay): what stays out of
the optimizer, which BatchNorm layers stay in eval mode, and that a few real training steps
leave frozen parameters and statistics bitwise unchanged."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo import models
from zoo.core.errors import ConfigError
from zoo.tasks.base import ZooTask
from zoo.tasks.build import build_task, follow_weights
from zoo.tasks.optim import build_optimizer, build_scheduler, parameter_groups

CLASSES = 3
SIZE = 32


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded ResNet-18 weights (1000 classes) as a local state_dict file, as if pretrained:
    running statistics away from their 0 / 1 start, so that a change would show."""
    torch.manual_seed(0)
    model = models.build("resnet18")
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("weights") / "pretrained.pth"
    torch.save(model.state_dict(), path)
    return path


def task(weights: Path | None, optimizer: dict[str, Any] | None = None, **finetune: Any) -> ZooTask:
    """ResNet-18 with ``weights`` and the ``task.finetune`` options ``finetune``."""
    model = {
        "name": "resnet18",
        "num_classes": CLASSES,
        "weights": str(weights) if weights else None,
    }
    optimizer = optimizer or {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-2}
    options = {"finetune": finetune}
    return build_task(model, optimizer, None, {"name": "imagenet_synthetic"}, options)


def fit(module: ZooTask, steps: int = 2) -> None:
    torch.manual_seed(1)
    images, labels = torch.randn(4 * steps, 3, SIZE, SIZE), torch.randint(0, CLASSES, (4 * steps,))
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(TensorDataset(images, labels), batch_size=4))


def bn_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "tracked" in k}


def optimized(module: ZooTask) -> set[int]:
    [optimizer] = module.trainer.optimizers
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def test_a_frozen_backbone_and_its_statistics_stay_bitwise_unchanged(weights_file: Path) -> None:
    module = task(weights_file, freeze="backbone")
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    fit(module)
    after = module.model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["fc.bias", "fc.weight"]  # the head trained, nothing else moved
    frozen = [p for n, p in module.model.named_parameters() if not n.startswith("fc.")]
    assert not any(p.requires_grad for p in frozen)
    assert optimized(module) == {id(module.model.fc.weight), id(module.model.fc.bias)}
    # Lightning put the module in train mode; the backbone's BatchNorm layers stayed in eval.
    module.train()
    assert not any(m.training for m in module.model.modules() if isinstance(m, nn.BatchNorm2d))


def test_frozen_batch_norm_keeps_its_statistics_while_the_rest_trains(weights_file: Path) -> None:
    module = task(weights_file, freeze="bn")
    statistics = bn_statistics(module.model)
    norms = {k: v.clone() for k, v in module.model.state_dict().items() if ".bn" in k or "bn1" in k}
    conv = module.model.conv1.weight.clone()
    fit(module)
    assert all(torch.equal(v, bn_statistics(module.model)[k]) for k, v in statistics.items())
    assert all(torch.equal(v, module.model.state_dict()[k]) for k, v in norms.items())
    assert not torch.equal(conv, module.model.conv1.weight)  # convolutions trained
    bn_parameters = {
        id(p)
        for m in module.model.modules()
        if isinstance(m, nn.BatchNorm2d)
        for p in m.parameters()
    }
    assert not optimized(module) & bn_parameters


def test_without_freezing_the_statistics_do_move(weights_file: Path) -> None:
    # The property the two tests above rely on is not vacuous.
    module = task(weights_file)
    statistics = bn_statistics(module.model)
    fit(module, steps=1)
    assert any(not torch.equal(v, bn_statistics(module.model)[k]) for k, v in statistics.items())


def test_the_backbone_learns_at_a_scaled_rate_and_norms_and_biases_skip_weight_decay() -> None:
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=CLASSES)
    groups = parameter_groups(model, ("fc",), backbone_lr_scale=0.1, norm_weight_decay=0.0)
    optimizer = build_optimizer(groups, {"name": "sgd", "lr": 0.2, "weight_decay": 1e-4})
    by_name = {group["name"]: group for group in optimizer.param_groups}
    assert {n: (g["lr"], g["weight_decay"]) for n, g in by_name.items()} == {
        "backbone": (pytest.approx(0.02), 1e-4),
        "backbone_norm_bias": (pytest.approx(0.02), 0.0),
        "model": (0.2, 1e-4),
        "model_norm_bias": (0.2, 0.0),
    }
    assert by_name["model"]["params"] == [model.fc.weight]
    assert by_name["model_norm_bias"]["params"] == [model.fc.bias]
    assert model.bn1.weight in by_name["backbone_norm_bias"]["params"]
    counted = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert counted == sum(p.numel() for p in model.parameters())
    # One-cycle peaks keep the ratio.
    schedule = build_scheduler(optimizer, {"name": "onecycle", "max_lr": 1.0}, 100, 10)
    peaks = [group["max_lr"] for group in optimizer.param_groups]
    assert schedule is not None and peaks == [pytest.approx(0.1)] * 2 + [1.0] * 2


def test_the_defaults_keep_one_unnamed_group_in_parameter_order() -> None:
    # Optimizer states saved before fine-tuning existed still load, and LearningRateMonitor
    # still logs lr-<Optimizer>.
    model = models.build("lenet")
    [group] = parameter_groups(model, ("classifier.4",))
    assert "name" not in group and group["params"] == list(model.parameters())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"freeze": "head"}, "task.finetune.freeze must be one of none, backbone, bn"),
        ({"backbone_lr_scale": 0}, "task.finetune.backbone_lr_scale must be a number > 0"),
        (
            {"norm_weight_decay": -1},
            "task.finetune.norm_weight_decay must be null or a number >= 0",
        ),
    ],
)
def test_impossible_options_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task(None, **options)


def test_preprocessing_follows_the_weights_unless_the_data_config_says(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Resolved only: nothing is read. ResNet-50 V2 was measured resizing to 232, not 256.
    module = SimpleNamespace(pretrained=models.pretrained("resnet50", "DEFAULT"))
    spec = {"name": "image_folder", "image_size": None, "resize_size": None, "mean": None}
    assert follow_weights(module, {**spec, "std": None}) == {
        "resize_size": 232,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    with caplog.at_level(logging.WARNING, logger="zoo.tasks.build"):
        kept = follow_weights(module, {**spec, "resize_size": 256, "std": [0.5, 0.5, 0.5]})
    assert kept == {"mean": [0.485, 0.456, 0.406]}
    assert "data.resize_size=256, but resnet50 ResNet50_Weights.IMAGENET1K_V2 was measured" in (
        caplog.text
    )
    assert "data.std=[0.5, 0.5, 0.5]" in caplog.text
    assert follow_weights(SimpleNamespace(pretrained=None), spec) == {}
