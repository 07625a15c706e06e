"""MixUp and CutMix (zoo.tasks.mixing): what each does to a batch, how often, the soft-target loss
with label smoothing, training accuracy on the hard labels, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import UNET_MNIST_TOY, run_script
from zoo.core.errors import ConfigError
from zoo.tasks.build import build_task
from zoo.tasks.classification import classification_loss
from zoo.tasks.mixing import BatchMixing, MixingOptions

CLASSES = 10
LENET = {"name": "lenet", "num_classes": CLASSES, "in_channels": 1}
ADAM = {"name": "adam", "lr": 1e-3}


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Distinct labels, so that each soft target shows its two sources apart.
    return torch.rand(n, 1, 32, 32, generator=generator), torch.arange(n)


def test_mixup_blends_whole_images_and_their_labels_by_one_ratio() -> None:
    images, labels = batch()
    mixed, soft = BatchMixing(CLASSES, MixingOptions(mixup_alpha=0.4, mixup_prob=1.0))(
        images, labels
    )
    lam = float(soft[0, labels[0]])
    partner = labels.roll(1)
    expected = lam * F.one_hot(labels, CLASSES) + (1 - lam) * F.one_hot(partner, CLASSES)
    torch.testing.assert_close(soft, expected.float())
    torch.testing.assert_close(mixed, lam * images + (1 - lam) * images.roll(1, dims=0))


def test_cutmix_pastes_a_box_and_weighs_the_labels_by_its_area() -> None:
    images, labels = batch()
    mixed, soft = BatchMixing(CLASSES, MixingOptions(cutmix_alpha=1.0, cutmix_prob=1.0))(
        images, labels
    )
    from_own = (mixed == images).all(dim=1)  # (N, H, W): pixel kept
    from_partner = (mixed == images.roll(1, dims=0)).all(dim=1)
    assert bool((from_own | from_partner).all())
    kept = from_own[0].float().mean()
    torch.testing.assert_close(soft[:, labels[0]][0], kept)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(len(labels)))


def kind(images: torch.Tensor, mixed: torch.Tensor, targets: torch.Tensor) -> str:
    if targets.dtype == torch.long:
        return "none"
    return "cutmix" if bool(((mixed == images).all(dim=1)).any()) else "mixup"


def test_each_batch_gets_mixup_cutmix_or_nothing_with_their_probabilities() -> None:
    torch.manual_seed(0)
    images, labels = batch(4)
    images = images[:, :, :8, :8]
    options = MixingOptions(mixup_alpha=0.2, mixup_prob=0.3, cutmix_alpha=1.0, cutmix_prob=0.2)
    mixing = BatchMixing(CLASSES, options)
    draws = 2000
    counts = {"mixup": 0, "cutmix": 0, "none": 0}
    for _ in range(draws):
        counts[kind(images, *mixing(images, labels))] += 1
    for name, p in (("mixup", 0.3), ("cutmix", 0.2), ("none", 0.5)):
        sigma = (p * (1 - p) / draws) ** 0.5
        assert abs(counts[name] / draws - p) < 4 * sigma, counts


def test_no_alpha_no_mixing() -> None:
    assert not BatchMixing(CLASSES, MixingOptions()).enabled
    module = build_task(LENET, ADAM, None, None, {})
    assert module.mixing is None


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_soft_target_loss_is_cross_entropy_against_the_smoothed_mixture(
    smoothing: float,
) -> None:
    logits = torch.randn(6, CLASSES, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    soft = 0.7 * F.one_hot(labels, CLASSES) + 0.3 * F.one_hot(labels.roll(1), CLASSES)
    loss, _ = classification_loss(logits, soft.float(), smoothing)
    target = (1 - smoothing) * soft + smoothing / CLASSES
    expected = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, expected)
    # One-hot soft targets are the hard labels.
    hard, _ = classification_loss(logits, labels, smoothing)
    one_hot, _ = classification_loss(logits, F.one_hot(labels, CLASSES).float(), smoothing)
    torch.testing.assert_close(hard, one_hot)


def test_training_trains_on_the_mixture_and_counts_accuracy_on_the_hard_labels() -> None:
    torch.manual_seed(0)
    options = {"mixing": {"mixup_alpha": 0.4, "mixup_prob": 1.0}, "label_smoothing": 0.1}
    module = build_task(LENET, ADAM, None, None, options)
    logged = {}
    module.log_split = lambda split, loss, logits, targets: logged.update(
        loss=loss, logits=logits, targets=targets
    )
    images, labels = batch()
    torch.manual_seed(3)
    loss = module.training_step((images, labels), 0)
    torch.manual_seed(3)
    mixed, soft = module.mixing(images, labels)
    assert soft.dtype == torch.float32
    expected, _ = classification_loss(module(mixed), soft, 0.1)
    torch.testing.assert_close(loss, expected)
    assert torch.equal(logged["targets"], labels)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("mixup_alpha", -0.1),
        ("cutmix_alpha", "big"),
        ("mixup_prob", 1.5),
        ("cutmix_prob", -0.2),
    ],
)
def test_out_of_range_alphas_and_probabilities_are_config_errors(option: str, value) -> None:
    options = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mixup_prob": 0.5, "cutmix_prob": 0.5}
    with pytest.raises(ConfigError, match=f"task.mixing.{option} must be"):
        build_task(LENET, ADAM, None, None, {"mixing": {**options, option: value}})


def test_probabilities_over_one_in_sum_are_refused() -> None:
    options = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mixup_prob": 0.7, "cutmix_prob": 0.7}
    with pytest.raises(
        ConfigError, match=r"task.mixing.mixup_prob \+ task.mixing.cutmix_prob must be <= 1"
    ):
        build_task(LENET, ADAM, None, None, {"mixing": options})


def test_mixup_with_a_segmentation_model_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    # The segmentation task's config has no mixing block: appended, its schema names the task.
    result = run_script(
        "train.py", *UNET_MNIST_TOY, "+task.mixing.mixup_alpha=0.2", f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "task.mixing is an option of classification models; this is a segmentation model" in line
    assert "Traceback" not in result.stderr
