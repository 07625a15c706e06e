"""ImageNet: both layouts, both input paths, subsets, bad input, and the four papers' recipes,
on tiny trees of generated JPEGs (nothing can be downloaded)."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig
from PIL import Image
from torchvision.datasets import imagenet as tv_imagenet

from benchmarks.imagenet_pipeline import photo_like, write_jpeg_tree
from tests.conftest import REPO_ROOT, compose_config, run_script
from tests.training.fault_tolerance_helpers import Interrupted
from zoo.core.errors import exit_on_user_error
from zoo.data.imagenet.imagenet import ImageNetDataModule
from zoo.data.imagenet.imagenet_synthetic import ImageNetSyntheticDataModule
from zoo.data.imagenet.io import ImageNetDataError
from zoo.data.imagenet.layout import ARCHIVES, class_names
from zoo.data.imagenet.transforms import IMAGENET_MEAN, eval_resize
from zoo.data.sampling import ResumableBatchSampler
from zoo.training.run import train

CLASSES = 4
TRAIN_PER_CLASS, VAL_PER_CLASS = 6, 2
# Varied shapes: landscape, portrait, square, smaller than the crop.
SIZES = ((80, 60), (60, 90), (72, 72), (40, 30))


def save_jpeg(path: Path, image: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=90)
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """root/{train,val}/<wnid>/*.JPEG: 4 classes of 6 + 2 images of varied sizes, plus one
    grayscale and one CMYK JPEG (both valid) and one truncated JPEG."""
    root = write_jpeg_tree(
        tmp_path_factory.mktemp("imagenet"), CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, SIZES
    )
    rng = np.random.default_rng(1)
    gray = save_jpeg(
        root / "train/n00000001/n00000001_gray.JPEG", photo_like(rng, 70, 50).convert("L")
    )
    cmyk = save_jpeg(
        root / "train/n00000002/n00000002_cmyk.JPEG", photo_like(rng, 50, 70).convert("CMYK")
    )
    buffer = io.BytesIO()
    photo_like(rng, 90, 70).save(buffer, "JPEG")
    corrupt = root / "train/n00000003/n00000003_truncated.JPEG"
    corrupt.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return {"root": root, "gray": gray, "cmyk": cmyk, "corrupt": corrupt}


@pytest.fixture
def clean_tree(tree: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the tree without the truncated file, to break in other ways."""
    root = shutil.copytree(tree["root"], tmp_path / "imagenet")
    (root / tree["corrupt"].relative_to(tree["root"])).unlink()
    return root


def datamodule(root: Path, **kwargs) -> ImageNetDataModule:
    kwargs = {"batch_size": 64, "num_workers": 0, "image_size": 32, "classes": CLASSES} | kwargs
    return ImageNetDataModule(root=str(root), **kwargs)


def batches(dm: ImageNetDataModule, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """What training_step / validation_step receive, as the Trainer would hand it over."""
    loader = {"train": dm.train_dataloader, "val": dm.val_dataloader, "test": dm.test_dataloader}
    iterator = iter(loader[split]())
    try:
        for batch in iterator:
            batch = dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)
            yield dm.on_after_batch_transfer(batch, 0)
    finally:
        # Stop the workers now, as the Trainer does, rather than whenever the garbage collector
        # gets to them (the traceback of a failed test keeps them alive).
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown:
            shutdown()


def imagenet_cfg(root: Path, output_dir: Path, *overrides: str) -> DictConfig:
    base = [
        f"data.root={root}",
        f"data.classes={CLASSES}",
        "data.num_workers=0",
        "data.batch_size=4",
        "data.eval_batch_size=4",
        "callbacks.progress_bar=null",
        "trainer.accelerator=cpu",
        "trainer.enable_model_summary=false",
    ]
    return compose_config(base + list(overrides), output_dir)


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


# --- the recipes ------------------------------------------------------------------------------

RECIPES = {
    # experiment: (model, optimizer lr, momentum, weight decay, batch, epochs, scheduler)
    "alexnet_imagenet": (
        "alexnet",
        0.01,
        0.9,
        5e-4,
        128,
        90,
        {"name": "step", "step_size": 30, "gamma": 0.1},
    ),
    "vgg16_imagenet": (
        "vgg16",
        0.01,
        0.9,
        5e-4,
        256,
        74,
        {"name": "multistep", "milestones": [25, 50, 65], "gamma": 0.1},
    ),
    "googlenet_imagenet": (
        "googlenet",
        0.1,
        0.9,
        1e-4,
        256,
        90,
        {"name": "step", "step_size": 30, "gamma": 0.1},
    ),
    "resnet18_imagenet": (
        "resnet18",
        0.1,
        0.9,
        1e-4,
        256,
        90,
        {"name": "step", "step_size": 30, "gamma": 0.1},
    ),
}


@pytest.mark.parametrize("experiment", sorted(RECIPES))
def test_recipes_are_the_documented_ones(experiment: str, tmp_path: Path) -> None:
    model, lr, momentum, wd, batch, epochs, scheduler = RECIPES[experiment]
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    assert cfg.model.name == model and cfg.data.name == "imagenet"
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum) == ("sgd", lr, momentum)
    assert cfg.optimizer.weight_decay == wd
    assert (cfg.data.batch_size, cfg.trainer.max_epochs) == (batch, epochs)
    assert dict(cfg.scheduler) == scheduler
    assert (cfg.model.in_channels, cfg.model.num_classes) == (3, 1000)
    assert cfg.task.aux_loss_weight == 0.3
    assert experiment in (REPO_ROOT / "docs/data.md").read_text()


# A small image size set by override, at or near each model's minimum. ResNet18 goes through
# the GPU input path (decoded on the CPU here) with a worker process, whose raw-bytes batches
# must survive the transfer between processes; the others through the CPU path.
MODEL_CASES = {
    "alexnet": ["data.image_size=67"],
    "vgg16": ["data.image_size=32"],
    "googlenet": ["data.image_size=32"],
    "resnet18": ["data.image_size=32", "data.decode=gpu", "data.num_workers=1"],
}


@pytest.mark.parametrize("model", sorted(MODEL_CASES))
def test_every_model_trains_through_its_imagenet_experiment(
    model: str, tree: dict[str, Path], tmp_path: Path
) -> None:
    cfg = imagenet_cfg(
        tree["root"],
        tmp_path,
        f"experiment={model}_imagenet",
        *MODEL_CASES[model],
        "data.skip_corrupt=true",
        "debug=fast_dev_run",
    )
    assert cfg.model.num_classes == CLASSES
    metrics = train(cfg, tmp_path)
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))


def test_synthetic_data_has_imagenet_shapes_and_says_it_is_synthetic(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = compose_config(
        [
            "data=imagenet_synthetic",
            "model=lenet",
            "data.image_size=32",
            "data.batch_size=4",
            "data.train_size=8",
            "data.val_size=4",
            "debug=fast_dev_run",
            "callbacks.progress_bar=null",
            "trainer.accelerator=cpu",
        ],
        tmp_path,
    )
    assert (cfg.model.in_channels, cfg.model.num_classes) == (3, 1000)
    with caplog.at_level(logging.WARNING):
        train(cfg, tmp_path)
    assert any("NOT ImageNet" in r.getMessage() for r in caplog.records)

    dm = ImageNetSyntheticDataModule(batch_size=4, image_size=224, train_size=6)
    dm.setup("fit")
    shapes = [tuple(dm.on_after_batch_transfer(b, 0)[0].shape) for b in dm.train_dataloader()]
    assert shapes == [(4, 3, 224, 224), (2, 3, 224, 224)]
    labels = torch.cat([dm.on_after_batch_transfer(b, 0)[1] for b in dm.val_dataloader()])
    assert len(labels) == 50_000 and labels.min() >= 0 and labels.max() < 1000


# --- the two input paths ----------------------------------------------------------------------


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_both_paths_give_normalised_rgb_crops_even_for_gray_and_cmyk(
    decode: str, clean_tree: Path
) -> None:
    dm = datamodule(clean_tree, decode=decode)
    dm.setup("fit")
    images, labels = next(batches(dm, "train"))
    assert images.shape == (CLASSES * TRAIN_PER_CLASS + 2, 3, 32, 32)  # + gray + CMYK
    assert images.dtype == torch.float32 and labels.dtype == torch.long
    assert set(labels.tolist()) == set(range(CLASSES))
    # Normalised with ImageNet's statistics: a pixel of 0 maps to -mean/std.
    assert images.min() >= -IMAGENET_MEAN[0] / 0.229 - 1e-4
    assert abs(images.mean().item()) < 1.5


def test_both_paths_give_the_same_evaluation_batches(clean_tree: Path) -> None:
    cpu, gpu = datamodule(clean_tree, decode="cpu"), datamodule(clean_tree, decode="gpu")
    cpu.setup("fit")
    gpu.setup("fit")
    (cpu_images, cpu_labels), (gpu_images, gpu_labels) = (
        next(batches(cpu, "val")),
        next(batches(gpu, "val")),
    )
    torch.testing.assert_close(gpu_images, cpu_images)
    assert torch.equal(gpu_labels, cpu_labels)


def test_image_files_of_any_size_are_preprocessed_like_evaluation_batches() -> None:
    dm = ImageNetDataModule(root="unused", image_size=64)
    images = [
        torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in ((50, 90), (300, 200))
    ]
    batch = dm.preprocess_images(images)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == torch.float32
    expected = dm.normalize(dm.eval_transform(images[1]).unsqueeze(0))
    assert torch.equal(batch[1:], expected)


@pytest.mark.parametrize(("image_size", "resize"), [(224, 256), (227, 259), (32, 37), (64, 73)])
def test_evaluation_resize_keeps_torchvisions_ratio(image_size: int, resize: int) -> None:
    assert eval_resize(image_size) == resize


# --- splits, subsets and names ----------------------------------------------------------------


def test_official_validation_images_are_val_and_test_by_default(clean_tree: Path) -> None:
    dm = datamodule(clean_tree)
    dm.setup("fit")
    assert dm.splits["val"] == dm.splits["test"]
    assert len(dm.splits["val"]) == CLASSES * VAL_PER_CLASS
    assert all("/val/" in path for path, _ in dm.splits["val"])


def test_holdout_subsets_and_class_subsets(clean_tree: Path) -> None:
    dm = datamodule(clean_tree, classes=2, images_per_class=3, holdout_per_class=2)
    dm.setup("fit")
    train_paths = {p for p, _ in dm.splits["train"]}
    val_paths = {p for p, _ in dm.splits["val"]}
    assert dm.wnids == ["n00000000", "n00000001"] and dm.class_names == dm.wnids
    assert len(train_paths) == 2 * 3 and len(val_paths) == 2 * 2
    assert not train_paths & val_paths
    assert all("/train/" in p for p in val_paths)  # held out from training images
    assert len(dm.splits["test"]) == 2 * VAL_PER_CLASS  # the official set stays the test set
    assert {label for _, label in dm.splits["train"]} == {0, 1}


def test_all_1000_classes_get_torchvisions_names(tmp_path: Path) -> None:
    wnids = [f"n{i:08d}" for i in range(1000)]
    names = class_names(tmp_path, wnids, wnids[:3])
    assert names == ["tench", "goldfish", "great white shark"]


# --- the official archives --------------------------------------------------------------------


def add_to_tar(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def jpeg_bytes(rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    photo_like(rng, 48, 40).save(buffer, "JPEG")
    return buffer.getvalue()


def write_archives(root: Path) -> dict[str, str]:
    """Tiny ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz
    in the official structure; returns their md5s."""
    sio = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    synsets = [
        (1, "n01440764", "tench, Tinca tinca"),
        (2, "n01443537", "goldfish, Carassius auratus"),
    ]
    fields = [
        "ILSVRC2012_ID",
        "WNID",
        "words",
        "gloss",
        "num_children",
        "children",
        "wordnet_height",
        "num_train_images",
    ]
    meta = np.zeros(len(synsets) + 1, dtype=[(f, "O") for f in fields])
    for i, (idx, wnid, words) in enumerate(synsets):
        meta[i] = (idx, wnid, words, "a fish", 0, np.zeros(0), 0, 3)
    meta[-1] = (1001, "n00000001", "fish", "not a leaf", 2, np.array([1, 2]), 1, 0)
    mat = io.BytesIO()
    sio.savemat(mat, {"synsets": meta})
    val_labels = [1, 2, 2, 1]  # ILSVRC2012_IDs of val images 1..4, in file order
    with tarfile.open(root / ARCHIVES["devkit"], "w:gz") as devkit:
        add_to_tar(devkit, "ILSVRC2012_devkit_t12/data/meta.mat", mat.getvalue())
        truth = "".join(f"{label}\n" for label in val_labels).encode()
        add_to_tar(
            devkit, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth
        )
    with tarfile.open(root / ARCHIVES["train"], "w") as outer:
        for _, wnid, _ in synsets:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as per_class:
                for i in range(3):
                    add_to_tar(per_class, f"{wnid}_{i}.JPEG", jpeg_bytes(rng))
            add_to_tar(outer, f"{wnid}.tar", inner.getvalue())
    with tarfile.open(root / ARCHIVES["val"], "w") as val:
        for i in range(len(val_labels)):
            add_to_tar(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg_bytes(rng))
    return {
        key: hashlib.md5((root / name).read_bytes()).hexdigest() for key, name in ARCHIVES.items()
    }


def test_official_archives_are_prepared_once_with_the_devkits_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md5s = write_archives(tmp_path)
    # torchvision checks the archives against the real ones' md5s.
    for key, name in ARCHIVES.items():
        monkeypatch.setitem(tv_imagenet.ARCHIVE_META, key, (name, md5s[key]))
    dm = datamodule(tmp_path, classes=2, decode="gpu")
    assert dm.resolved_layout() == "archives"
    dm.prepare_data()
    dm.setup("fit")
    assert dm.wnids == ["n01440764", "n01443537"]
    assert dm.class_names == ["tench", "goldfish"]
    assert len(dm.splits["train"]) == 6
    # The flat validation images went into class folders by the devkit's ground truth.
    val = sorted((Path(p).name, label) for p, label in dm.splits["val"])
    assert [label for _, label in val] == [0, 1, 1, 0]
    images, _ = next(batches(dm, "val"))
    assert images.shape == (4, 3, 32, 32)

    for name in ARCHIVES.values():
        (tmp_path / name).unlink()
    again = datamodule(tmp_path, classes=2)
    again.setup("fit")  # prepared once: the archives are no longer needed
    assert again.class_names == ["tench", "goldfish"]


def test_an_archive_with_the_wrong_checksum_is_named(tmp_path: Path) -> None:
    write_archives(tmp_path)  # not the real archives: torchvision's md5 check refuses them
    with pytest.raises(ImageNetDataError, match=ARCHIVES["devkit"]):
        datamodule(tmp_path, layout="archives").prepare_data()


# --- bad input ------------------------------------------------------------------------------


def empty_class_folder(root: Path) -> Path:
    folder = root / "train/n00000002"
    for path in folder.iterdir():
        path.unlink()
    return folder


def mismatched_classes(root: Path) -> Path:
    (root / "val/n00000003").rename(root / "val/n00000009")
    return root / "val"


def flat_val_folder(root: Path) -> Path:
    val = root / "val"
    for path in list(val.glob("*/*.JPEG")):
        path.rename(val / path.name)
    for folder in val.iterdir():
        if folder.is_dir():
            folder.rmdir()
    return val


def not_an_imagenet_root(root: Path) -> Path:
    shutil.rmtree(root / "train")
    shutil.rmtree(root / "val")
    (root / "photos.zip").write_bytes(b"")
    return root


def missing_root(root: Path) -> Path:
    shutil.rmtree(root)
    return root


def root_is_a_file(root: Path) -> Path:
    shutil.rmtree(root)
    root.write_text("not a folder")
    return root


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (missing_root, "does not exist"),
        (root_is_a_file, "is a file, not a folder: set data.root"),
        (not_an_imagenet_root, "is not an ImageNet root"),
        (flat_val_folder, "holds images directly"),
        (empty_class_folder, "empty class folder"),
        (mismatched_classes, "n00000009"),
    ],
)
def test_bad_layouts_are_named(breakage, message: str, clean_tree: Path) -> None:
    path = breakage(clean_tree)
    with pytest.raises(ImageNetDataError, match=message) as error:
        datamodule(clean_tree).setup("fit")
    assert str(path) in str(error.value)


def test_more_classes_asked_for_than_there_are(clean_tree: Path) -> None:
    with pytest.raises(ImageNetDataError, match=r"data.classes=1000.*only 4 class folders"):
        datamodule(clean_tree, classes=1000).setup("fit")


def write_text_as_jpeg(root: Path) -> Path:
    path = root / "train/n00000000/n00000000_text.JPEG"
    path.write_text("<html>403 Forbidden</html>")
    return path


def truncate_a_jpeg(root: Path) -> Path:
    path = next((root / "train/n00000001").glob("*.JPEG"))
    path.write_bytes(path.read_bytes()[:300])
    return path


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
@pytest.mark.parametrize("breakage", [truncate_a_jpeg, write_text_as_jpeg])
@pytest.mark.parametrize("workers", [0, 1])
def test_an_unreadable_image_stops_the_run_with_its_path(
    breakage, decode: str, workers: int, clean_tree: Path
) -> None:
    path = breakage(clean_tree)
    dm = datamodule(clean_tree, decode=decode, num_workers=workers)
    dm.setup("fit")
    with pytest.raises(ImageNetDataError) as error:
        list(batches(dm, "train"))
    message = str(error.value)
    assert message.startswith(f"cannot read image {path}:") and "data.skip_corrupt" in message
    assert "Caught" not in message and "\n" not in message


def test_skip_corrupt_prescans_and_lists_what_it_skips(
    tree: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    dm = datamodule(tree["root"], skip_corrupt=True)
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert dm.skipped == [str(tree["corrupt"])]
    assert str(tree["corrupt"]) in caplog.text
    train_paths = {p for p, _ in dm.splits["train"]}
    assert str(tree["gray"]) in train_paths and str(tree["cmyk"]) in train_paths
    assert str(tree["corrupt"]) not in train_paths


def test_an_unreadable_image_is_a_one_line_user_error(
    tree: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = imagenet_cfg(
        tree["root"],
        tmp_path,
        "experiment=resnet18_imagenet",
        "data.image_size=32",
        "data.num_workers=1",
        "data.batch_size=64",
        "debug=fast_dev_run",
    )
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error():
        train(cfg, tmp_path)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"Error: cannot read image {tree['corrupt']}:")
    assert "\n" not in error


@pytest.mark.slow
def test_command_line_names_the_unreadable_file_in_one_line(
    tree: dict[str, Path], tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        "experiment=resnet18_imagenet",
        f"data.root={tree['root']}",
        f"data.classes={CLASSES}",
        "data.image_size=32",
        "data.num_workers=1",
        "data.batch_size=64",
        "debug=fast_dev_run",
        "trainer.accelerator=cpu",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={tmp_path}",
        timeout=180,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: cannot read image {tree['corrupt']}:")
    assert "Traceback" not in result.stderr


# --- resuming -------------------------------------------------------------------------------


def test_the_training_order_resumes_mid_epoch_and_shards_across_ranks(clean_tree: Path) -> None:
    def labels(dm: ImageNetDataModule) -> list[list[int]]:
        return [batch[1].tolist() for batch in batches(dm, "train")]

    dm = datamodule(clean_tree, batch_size=4)
    dm.setup("fit")
    straight = labels(dm)
    assert isinstance(dm.train_dataloader().sampler, ResumableBatchSampler)
    assert sum(map(len, straight)) == len(dm.splits["train"])

    resumed = datamodule(clean_tree, batch_size=4)
    resumed.setup("fit")
    resumed.train_sampler.resume_at(epoch=0, batches_seen=2, seed=dm.train_sampler.seed)
    assert labels(resumed) == straight[2:]


def test_a_run_stopped_mid_epoch_resumes_on_imagenet_exactly(
    clean_tree: Path, tmp_path: Path
) -> None:
    run = [
        "experiment=resnet18_imagenet",
        "data.image_size=32",
        "trainer.max_epochs=2",
        "callbacks.step_checkpoint.every_n_train_steps=2",
        "logger=none",
        "test=false",
    ]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(imagenet_cfg(clean_tree, straight, *run), straight)
    stop = [
        "+callbacks.stop._target_=tests.training.fault_tolerance_helpers.StopAfterStep",
        "+callbacks.stop.step=5",
    ]
    with pytest.raises(Interrupted):
        train(imagenet_cfg(clean_tree, stopped, *run, *stop), stopped)
    GlobalHydra.instance().clear()
    # 26 images, 7 batches an epoch: last.ckpt holds step 4, mid-way through the first epoch.
    last = stopped / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 4
    train(imagenet_cfg(clean_tree, stopped, *run, "ckpt_path=last"), stopped)

    a, b = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (stopped, straight)
    )
    assert a["global_step"] == b["global_step"] == 14
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key
