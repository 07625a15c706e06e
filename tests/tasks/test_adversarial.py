"""zoo.tasks.adversarial: FGSM and PGD in pixel units, checked against the closed forms of an
affine classifier, and adversarial training (task.adversarial.method) on every classifier."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig
from torch import nn

from tests.models.test_models import SLOW_TO_BUILD, SMALL_KWARGS, small_size
from zoo import models
from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.tasks.adversarial import AdversarialOptions, Perturbation, fgsm, pgd
from zoo.tasks.build import build_task
from zoo.training.run import train

MEAN, STD = torch.tensor(0.5).view(1, 1, 1, 1), torch.tensor(0.25).view(1, 1, 1, 1)
SHAPE = (1, 8, 8)


def affine_classifier(classes: int, seed: int = 0) -> nn.Module:
    """logits = W x + b on normalised inputs: affine in the pixels too, with weights W / STD."""
    torch.manual_seed(seed)
    layer = nn.Linear(64, classes)
    with torch.no_grad():
        layer.weight.mul_(0.3)
    return nn.Sequential(nn.Flatten(), layer)


def pixel_weights(model: nn.Module) -> torch.Tensor:
    """W' with logits = W' p + b' for pixels p."""
    return model[1].weight / STD.flatten()


def interior_pixels(count: int, seed: int = 1) -> torch.Tensor:
    """Pixels in [0.3, 0.7]: small attacks never meet the [0, 1] box."""
    generator = torch.Generator().manual_seed(seed)
    return 0.3 + 0.4 * torch.rand((count, *SHAPE), generator=generator)


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - MEAN) / STD


def margins(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logit of the label minus the other logit (two classes)."""
    logits = model(images)
    return logits.gather(1, labels[:, None])[:, 0] - logits.gather(1, 1 - labels[:, None])[:, 0]


@pytest.mark.parametrize(("norm", "dual"), [("linf", 1), ("l2", 2)])
def test_pgd_reaches_the_closed_form_worst_case_of_an_affine_classifier(
    norm: str, dual: int
) -> None:
    # Two classes: cross-entropy falls with the margin m = (w_y - w_o).x + b, whose minimum over
    # ||r|| <= eps is m - eps * ||w_y - w_o||_dual (dual of L-inf: L1; of L2: L2).
    model = affine_classifier(2)
    images = normalised(interior_pixels(16))
    labels = model(images).argmax(dim=1)
    weight = pixel_weights(model)
    direction = (weight[labels] - weight[1 - labels]).norm(p=dual, dim=1)
    eps = 0.02
    adversarial = pgd(model, images, labels, eps, MEAN, STD, steps=30, norm=norm, start=False)
    expected = margins(model, images, labels) - eps * direction
    assert torch.allclose(margins(model, adversarial, labels), expected, atol=1e-4)


def test_fgsm_is_pgds_single_step_from_the_image() -> None:
    model = affine_classifier(10)
    images = normalised(interior_pixels(8))
    labels = torch.arange(8)
    [single] = fgsm(model, images, labels, [0.1], MEAN, STD)
    stepped = pgd(model, images, labels, 0.1, MEAN, STD, steps=1, step_size=0.1, start=False)
    assert torch.allclose(single, stepped, atol=1e-6)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_from_a_random_start_stays_in_the_ball_and_the_box(norm: str) -> None:
    model = affine_classifier(10)
    pixels = torch.rand((32, *SHAPE))  # touching 0 and 1: the box binds
    pixels[:, :, 0] = 0.0
    labels = torch.arange(32) % 10
    eps = 0.3 if norm == "linf" else 1.5
    adversarial = pgd(model, normalised(pixels), labels, eps, MEAN, STD, steps=5, norm=norm)
    delta = adversarial * STD + MEAN - pixels
    size = delta.abs().amax(dim=(1, 2, 3)) if norm == "linf" else delta.flatten(1).norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert (pixels + delta).min() >= -1e-6 and (pixels + delta).max() <= 1 + 1e-6
    assert torch.equal(pgd(model, normalised(pixels), labels, 0.0, MEAN, STD), normalised(pixels))


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"method": "pgd", "eps": 1.5}, r"task.adversarial.eps must be a number in \[0, 1\]"),
        ({"method": "pgd", "eps": -0.1}, r"task.adversarial.eps must be a number in \[0, 1\]"),
        ({"method": "pgd", "steps": 0}, "task.adversarial.steps must be an integer >= 1, got 0"),
        ({"method": "fgsm", "norm": "l2"}, "fgsm is an L-infinity attack"),
        ({"method": "cw"}, "task.adversarial.method must be null \\(off\\) or fgsm, pgd, got 'cw'"),
        ({"method": "pgd", "alpha": 2}, r"task.adversarial.alpha must be a number in \[0, 1\]"),
        ({"val_batches": 0}, "task.adversarial.val_batches must be an integer >= 1, or null"),
        (
            {"method": "pgd", "steps": 10**9},
            r"^task.adversarial.steps must be at most 10,000 \(each is a forward and a backward "
            r"pass\), got 1000000000$",
        ),
        ({"val_steps": 10**9}, "task.adversarial.val_steps must be at most 10,000 "),
        ({"method": "pgd", "step_size": float("inf")}, "step_size must be a finite number"),
    ],
)
def test_impossible_adversarial_settings_are_refused(block: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AdversarialOptions.parse(block, "task.adversarial")


def test_fgsm_steps_once_and_validation_is_pgd_at_the_training_budget() -> None:
    options = AdversarialOptions(method="fgsm", eps=0.2, steps=5, val_steps=3, norm="linf")
    training, validation = Perturbation.training(options), Perturbation.validation(options)
    # Wong et al.'s fast adversarial training: one step of 1.25 eps from a random start.
    assert (training.steps, training.step_size, training.start) == (1, pytest.approx(0.25), True)
    assert (validation.method, validation.steps, validation.eps) == ("pgd", 3, 0.2)
    assert validation.step_size is None  # 2.5 * eps / steps


# LeNet in the default run; the others (GoogLeNet's auxiliary heads too) with the slow tests.
FAST = {"lenet"}


def classifier_names() -> list[object]:
    """Every registered classifier, the expensive ones marked slow."""
    names = []
    for name in models.available():
        with torch.device("meta"):
            task = models.build(name, **SMALL_KWARGS.get(name, {})).task
        if task != "classification":
            continue
        slow = name not in FAST or name in SLOW_TO_BUILD
        names.append(pytest.param(name, marks=pytest.mark.slow) if slow else name)
    return names


@pytest.mark.parametrize("name", classifier_names())
@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_adversarial_training_takes_a_step_on_every_classifier(name: str, method: str) -> None:
    torch.manual_seed(0)
    module = build_task(
        {"name": name, **SMALL_KWARGS.get(name, {})},
        {"name": "sgd", "lr": 0.01},
        None,
        None,
        {"adversarial": {"method": method, "steps": 2, "alpha": 0.0}},
    )
    size = small_size(module.model)
    images = torch.randn(2, module.model.in_channels, size, size)
    targets = torch.tensor([0, 1])
    module.train()
    clean_loss, _ = module.loss(module(images), targets)
    loss = module.adversarial_loss(clean_loss, images, targets)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in module.model.parameters() if p.requires_grad)


def test_robust_validation_accuracy_is_logged_each_epoch(
    train_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = train_cfg(
        "trainer.max_epochs=2",
        "logger=csv",
        "task.adversarial.method=pgd",
        "task.adversarial.steps=2",
        "task.adversarial.val_steps=3",
        "task.adversarial.val_batches=1",
        "test=false",
    )
    train(cfg, tmp_path)
    [log] = tmp_path.glob("**/metrics.csv")
    rows = [line.split(",") for line in log.read_text().splitlines()]
    column = rows[0].index("val/robust_acc")
    values = [float(row[column]) for row in rows[1:] if row[column]]
    clean = [float(row[rows[0].index("val/acc")]) for row in rows[1:] if row[column]]
    assert len(values) == 2  # one per epoch
    # The same batch, clean and attacked (a random start may rescue a digit or two).
    assert all(0 <= robust <= acc + 0.02 for robust, acc in zip(values, clean, strict=True))


def test_adversarial_options_are_config_errors_before_data_loads(
    train_cfg: Callable[..., DictConfig],
) -> None:
    cfg = train_cfg("task.adversarial.method=pgd", "task.adversarial.alpha=2")
    with pytest.raises(ConfigError, match=r"task.adversarial.alpha must be a number in \[0, 1\]"):
        build_task(to_plain(cfg.model), to_plain(cfg.optimizer), None, None, to_plain(cfg.task))
