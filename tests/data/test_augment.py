"""ImageNet's augmentation policies (data.auto_augment, data.random_erasing): each one key, in the
training pipeline of both input paths (decode=cpu in the workers, decode=gpu on the device),
evaluation untouched, bad values refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from torchvision.transforms import v2

from benchmarks.imagenet_pipeline import write_jpeg_tree
from tests.conftest import compose_config
from zoo.core.errors import ConfigError
from zoo.data.imagenet.imagenet import ImageNetDataModule
from zoo.data.imagenet.transforms import (
    AUTO_AUGMENT,
    ERASE_VALUE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    train_transform,
)
from zoo.tasks.build import build_datamodule
from zoo.training.run import train

POLICIES = {
    "autoaugment": v2.AutoAugment,
    "randaugment": v2.RandAugment,
    "trivialaugment": v2.TrivialAugmentWide,
    "augmix": v2.AugMix,
}
CLASSES, SIZE = 2, 32


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jpeg_tree(tmp_path_factory.mktemp("imagenet"), CLASSES, 4, 1, ((60, 48), (40, 56)))


def training_batch(root: Path, **options) -> torch.Tensor:
    """The first training batch as training_step gets it (decode=gpu decodes on the CPU here)."""
    dm = ImageNetDataModule(
        root=str(root), batch_size=8, num_workers=0, image_size=SIZE, classes=CLASSES, **options
    )
    dm.setup("fit")
    iterator: Iterator = iter(dm.train_dataloader())
    batch = dm.transfer_batch_to_device(next(iterator), torch.device("cpu"), 0)
    return dm.on_after_batch_transfer(batch, 0)[0]


def erased_pixels(images: torch.Tensor) -> torch.Tensor:
    """Per image, the pixels holding the erasing colour, normalised."""
    value = (torch.tensor(ERASE_VALUE) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    same = (images - value.view(1, 3, 1, 1)).abs() < 1e-5
    return same.all(dim=1).flatten(1).sum(dim=1)


def test_every_policy_of_torchvisions_references_is_one_key() -> None:
    assert set(AUTO_AUGMENT) == set(POLICIES)
    for name, policy in POLICIES.items():
        steps = train_transform(SIZE, auto_augment=name).transforms
        assert [type(s) for s in steps if isinstance(s, policy)] == [policy], name
    plain = train_transform(SIZE).transforms
    assert not any(isinstance(s, (*POLICIES.values(), v2.RandomErasing)) for s in plain)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_policy_changes_the_crops_and_keeps_them_uint8(name: str) -> None:
    image = torch.randint(0, 256, (3, 48, 40), dtype=torch.uint8)
    changed = 0
    for seed in range(5):
        torch.manual_seed(seed)
        plain = train_transform(SIZE)(image)
        torch.manual_seed(seed)
        augmented = train_transform(SIZE, auto_augment=name)(image)
        assert augmented.dtype == torch.uint8 and augmented.shape == (3, SIZE, SIZE)
        changed += not torch.equal(plain, augmented)
    assert changed > 0


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_both_input_paths_augment_the_training_batches(decode: str, root: Path) -> None:
    torch.manual_seed(0)
    erased = training_batch(root, decode=decode, auto_augment="trivialaugment", random_erasing=1.0)
    # Random erasing at p=1: every image holds a rectangle of at least 2% of its pixels (the
    # smallest scale) in the mean colour, which is 0 once normalised, as in torchvision's.
    assert bool((erased_pixels(erased) >= 0.02 * SIZE * SIZE - 1).all())
    torch.manual_seed(0)
    plain = training_batch(root, decode=decode)
    assert bool((erased_pixels(plain) < 0.02 * SIZE * SIZE - 1).all())
    assert erased.shape == plain.shape == (8, 3, SIZE, SIZE)


def test_evaluation_is_not_augmented(root: Path) -> None:
    def val_batch(**options) -> torch.Tensor:
        dm = ImageNetDataModule(
            root=str(root), batch_size=8, num_workers=0, image_size=SIZE, classes=CLASSES, **options
        )
        dm.setup("fit")
        return dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)[0]

    torch.testing.assert_close(val_batch(auto_augment="augmix", random_erasing=1.0), val_batch())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"auto_augment": "autoaugmentt"}, "data.auto_augment must be null or one of"),
        ({"random_erasing": 1.5}, "data.random_erasing must be a probability"),
        ({"random_erasing": -0.1}, "data.random_erasing must be a probability"),
    ],
)
def test_unknown_policies_and_probabilities_out_of_range_are_config_errors(
    options: dict, message: str, root: Path
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_datamodule({"name": "imagenet", "root": str(root), "image_size": SIZE, **options})


def test_the_tv2_recipe_is_torchvisions_and_trains_end_to_end(root: Path, tmp_path: Path) -> None:
    """experiment=resnet18_imagenet_tv2: every ingredient on (TrivialAugment and random erasing
    in the workers, MixUp/CutMix, label smoothing, no decay on norms, EMA, cosine with warm-up),
    one batch of each split, decoded in the main process (decode=gpu, on the CPU here)."""
    cfg = compose_config(["experiment=resnet18_imagenet_tv2"], tmp_path)
    assert (cfg.data.auto_augment, cfg.data.random_erasing) == ("trivialaugment", 0.1)
    mixing = cfg.task.mixing
    assert (cfg.task.label_smoothing, mixing.mixup_alpha, mixing.cutmix_alpha) == (0.1, 0.2, 1.0)
    assert cfg.task.finetune.norm_weight_decay == 0.0
    assert (cfg.scheduler.name, cfg.scheduler.warmup_epochs, cfg.trainer.max_epochs) == (
        "cosine",
        5,
        600,
    )
    assert cfg.callbacks.ema._target_ == "zoo.training.ema.EMA"
    overrides = [
        "experiment=resnet18_imagenet_tv2",
        f"data.root={root}",
        f"data.classes={CLASSES}",
        "data.decode=gpu",
        f"data.image_size={SIZE}",
        "data.batch_size=4",
        "data.num_workers=0",
        "callbacks.progress_bar=null",
        "trainer.accelerator=cpu",
        "debug=fast_dev_run",
        "logger=none",
    ]
    metrics = train(compose_config(overrides, tmp_path), tmp_path)
    GlobalHydra.instance().clear()
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
