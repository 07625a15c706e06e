"""data=image_folder: any classes in train/<class>/, val/<class>/ and an optional test/<class>/,
JPEG, PNG or WebP, through ImageNet's pipeline; and the fine-tuning recipe on it, from pretrained
weights to a checkpoint whose predictions name the folder's classes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from benchmarks.imagenet_pipeline import photo_like
from tests.conftest import compose_config
from tests.pretrained import Publisher
from zoo import data
from zoo.data.image_folder import ImageFolderDataModule, ImageFolderError
from zoo.data.imagenet.io import ImageNetDataError
from zoo.data.imagenet.transforms import IMAGENET_MEAN, IMAGENET_STD
from zoo.evaluation.run import evaluate
from zoo.training.run import train

CLASSES = ["cat", "dog", "sea turtle"]  # any names, spaces too
FORMATS = (("JPEG", ".jpg"), ("PNG", ".png"), ("WEBP", ".webp"))
COUNTS = {"train": 4, "val": 2, "test": 2}


def write_folder(root: Path, counts: dict[str, int] = COUNTS) -> Path:
    """root/<split>/<class>/ with the three formats in turn, varied sizes; class k is tinted."""
    rng = np.random.default_rng(0)
    n = 0
    for split, per_class in counts.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                image = np.asarray(photo_like(rng, 40 + 8 * (n % 3), 36), dtype=np.int16)
                image[..., label] += 80  # something to learn
                fmt, suffix = FORMATS[n % len(FORMATS)]
                Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
                    folder / f"{i}{suffix}", fmt
                )
                n += 1
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


def datamodule(root: Path, **kwargs) -> ImageFolderDataModule:
    kwargs = {"batch_size": 64, "num_workers": 0, "image_size": 32, "classes": None} | kwargs
    return ImageFolderDataModule(root=str(root), **kwargs)


def split_batch(dm: ImageFolderDataModule, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}
    [batch] = list(loader[split]())
    return dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, torch.device("cpu"), 0), 0)


def test_the_classes_are_the_folders_and_test_is_its_own_split(folder: Path) -> None:
    dm = datamodule(folder)
    dm.setup("fit")
    assert dm.class_names == CLASSES
    assert {s: len(v) for s, v in dm.splits.items()} == {"train": 12, "val": 6, "test": 6}
    assert all("/test/" in path for path, _ in dm.splits["test"])
    spec = data.describe({"name": "image_folder", "root": str(folder), "classes": None})
    assert (spec["num_classes"], spec["class_names"]) == (3, CLASSES)


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_jpeg_png_and_webp_give_normalised_rgb_crops_on_both_paths(
    folder: Path, decode: str
) -> None:
    dm = datamodule(folder, decode=decode)
    dm.setup("test")
    images, labels = split_batch(dm, "test")
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.float32
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 2, 2]


def test_both_paths_give_the_same_evaluation_batches(folder: Path) -> None:
    batches = []
    for decode in ("cpu", "gpu"):
        dm = datamodule(folder, decode=decode)
        dm.setup("test")
        batches.append(split_batch(dm, "val"))
    torch.testing.assert_close(batches[0], batches[1])


def test_preprocessing_follows_the_given_mean_std_and_resize_and_grey_averages_them(
    folder: Path,
) -> None:
    dm = datamodule(folder, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25], resize_size=40)
    assert dm.eval_transform.transforms[0].size == [40]
    image = torch.full((3, 50, 50), 255, dtype=torch.uint8)
    assert torch.allclose(dm.preprocess_images([image]), torch.tensor(2.0))
    grey = datamodule(folder, channels=1)
    out = grey.preprocess_images([torch.zeros_like(image)])  # black: grey conversion is exact
    assert out.shape == (1, 1, 32, 32)
    expected = -(sum(IMAGENET_MEAN) / 3) / (sum(IMAGENET_STD) / 3)
    assert torch.allclose(out, torch.tensor(expected))


def test_subsets_of_classes_and_images(folder: Path) -> None:
    dm = datamodule(folder, classes=2, images_per_class=3)
    dm.setup("fit")
    assert dm.class_names == CLASSES[:2] and len(dm.splits["train"]) == 6


def without_test(root: Path) -> Path:
    for path in sorted((root / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (root / "test").rmdir()
    return root


def test_without_a_test_folder_val_is_also_the_test_split(tmp_path: Path) -> None:
    dm = datamodule(without_test(write_folder(tmp_path / "f", {"train": 1, "val": 1, "test": 1})))
    dm.setup("test")
    assert dm.splits["test"] == dm.splits["val"]


def missing_val_class(root: Path) -> Path:
    without_test(root)
    [image] = (root / "val" / "dog").iterdir()
    image.rename(root / "val" / image.name)
    (root / "val" / "dog").rmdir()
    return root


def foreign_test_class(root: Path) -> Path:
    (root / "test" / "horse").mkdir()
    return root


def empty_class(root: Path) -> Path:
    [image] = (root / "train" / "dog").iterdir()
    image.unlink()
    return root


def single_class(root: Path) -> Path:
    for split in COUNTS:
        for name in CLASSES[1:]:
            for image in (root / split / name).iterdir():
                image.unlink()
            (root / split / name).rmdir()
    return root


def root_is_a_file(root: Path) -> Path:
    shutil.rmtree(root)
    root.write_text("not a folder")
    return root


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda root: root / "nowhere", r"image folder root .*nowhere does not exist: set data"),
        (root_is_a_file, r"image folder root .*f is a file, not a folder: set data.root"),
        (single_class, r"train has a single class folder \(cat\): classification needs at least 2"),
        (missing_val_class, r"val holds images directly \(0\.\w+, ...\), not in <class>/ class"),
        (foreign_test_class, r"of .*train and .*test differ: .*only in val \['horse'\]"),
        (empty_class, r"empty class folder .*train/dog: it holds no image files"),
    ],
)  # fmt: skip
def test_bad_layouts_are_named(breakage, message: str, tmp_path: Path) -> None:
    root = breakage(write_folder(tmp_path / "f", {"train": 1, "val": 1, "test": 1}))
    with pytest.raises(ImageNetDataError, match=message):
        data.describe({"name": "image_folder", "root": str(root)})
        datamodule(root).setup("fit")


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_an_unreadable_image_is_named(decode: str, tmp_path: Path) -> None:
    root = write_folder(tmp_path / "f", {"train": 1, "val": 1})
    [broken] = (root / "val" / "dog").iterdir()
    broken.write_bytes(b"not a png")
    dm = datamodule(root, decode=decode)
    dm.setup("test")
    with pytest.raises(ImageNetDataError, match=rf"cannot read image {broken}"):
        split_batch(dm, "val")


def test_one_class_of_several_is_refused_too(folder: Path) -> None:
    refused = "data.classes=1: classification needs at least 2 classes"
    with pytest.raises(ImageNetDataError, match=refused):
        data.describe({"name": "image_folder", "root": str(folder), "classes": 1})
    with pytest.raises(ImageNetDataError, match=refused):
        datamodule(folder, classes=1).setup("fit")


def test_class_names_that_are_not_the_folders_are_refused(folder: Path) -> None:
    spec = {"name": "image_folder", "root": str(folder), "class_names": ["a", "b", "c"]}
    with pytest.raises(ImageFolderError, match="differ from the class folders"):
        data.describe(spec)


# --- the fine-tuning recipe, end to end --------------------------------------------------------


@pytest.fixture
def pretrained_resnet18(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """torchvision's resnet18 file in a temporary torch.hub cache: a seeded stand-in."""
    return Publisher(tmp_path / "torch_home", monkeypatch)("resnet18")


def test_the_finetune_recipe_trains_evaluates_and_predicts_the_folders_classes(
    folder: Path, pretrained_resnet18: Path, tmp_path: Path
) -> None:
    overrides = [
        "experiment=resnet18_finetune",
        f"data.root={folder}",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=6",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
        "callbacks.progress_bar=null",
        "logger=csv",
    ]
    cfg = compose_config(overrides, tmp_path / "train")
    assert (cfg.model.weights, cfg.task.finetune.freeze, cfg.data.name) == (
        "IMAGENET1K_V1",
        "backbone",
        "image_folder",
    )
    metrics = train(cfg, tmp_path / "train")
    assert 0 <= metrics["test/acc"] <= 1
    [best] = (tmp_path / "train" / "checkpoints").glob("epoch*.ckpt")
    saved = torch.load(best, weights_only=True)
    assert saved["hyper_parameters"]["data"]["class_names"] == CLASSES
    assert "weights" not in saved["hyper_parameters"]["model"]  # evaluating needs no weights file
    assert saved["pretrained"]["file"] == "resnet18-f37072fd.pth"
    # The weights' preprocessing was used and kept for evaluation.
    kept = saved["datamodule_hyper_parameters"]
    assert (kept["mean"], kept["std"], kept["resize_size"]) == (
        list(IMAGENET_MEAN), list(IMAGENET_STD), 256,
    )  # fmt: skip

    GlobalHydra.instance().clear()
    evaluation = compose_config(
        [f"ckpt_path={best}", "trainer.accelerator=cpu", "logger=none"],
        tmp_path / "evaluate",
        config_name="evaluate",
    )
    report = evaluate(evaluation, tmp_path / "evaluate")
    assert report["dataset"] == "image_folder" and report["samples"] == 6
    assert list(report["per_class"]) == CLASSES

    GlobalHydra.instance().clear()
    prediction = compose_config(
        [f"ckpt_path={best}", f"predict={folder / 'test'}", "top_k=2", "logger=none"],
        tmp_path / "predict",
        config_name="evaluate",
    )
    evaluate(prediction, tmp_path / "predict")
    predictions = json.loads((tmp_path / "predict" / "predictions.json").read_text())
    rows = predictions["predictions"]
    assert len(rows) == 6
    assert all({c["class"] for c in row["top_k"]} <= set(CLASSES) for row in rows)
