"""Finding ImageNet under ``root``: which layout it has, unpacking the archives, the class
folders, their names, and the (path, label) samples of each split.

- ``folders``: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``;
- ``archives``: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and
  ILSVRC2012_devkit_t12.tar.gz, which ``torchvision.datasets.ImageNet`` unpacks once into the
  folder layout (plus ``meta.bin``, the devkit's class names).

Whatever doesn't fit is an ``ImageNetDataError`` that names the path and says what was expected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from torchvision import datasets, models

from zoo.core.files import path_problem
from zoo.data.imagenet.io import ImageNetDataError
from zoo.data.images import list_folder

log = logging.getLogger(__name__)

NUM_CLASSES = 1000
ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "val": "ILSVRC2012_img_val.tar",
    "devkit": "ILSVRC2012_devkit_t12.tar.gz",
}
LAYOUTS = ("auto", "folders", "archives")
Samples = list[tuple[str, int]]


def _unlistable(path: str, reason: str) -> ImageNetDataError:
    return ImageNetDataError(f"cannot read {path}: {reason}")


def resolve_layout(root: Path, layout: str) -> str:
    """``folders`` or ``archives``: ``layout`` itself, or for ``auto`` what ``root`` holds."""
    problem = path_problem(root, "folder")
    if problem is not None:
        raise ImageNetDataError(
            f"ImageNet root {root} {problem}: set data.root to the folder holding "
            "train/ and val/ (or the official archives)"
        )
    if layout != "auto":
        return layout
    if (root / "train").is_dir() or (root / "val").is_dir():
        return "folders"
    if any((root / name).is_file() for name in ARCHIVES.values()):
        return "archives"
    found = sorted(p.name for p in root.iterdir())[:5]
    raise ImageNetDataError(
        f"{root} is not an ImageNet root: expected train/<wnid>/*.JPEG and "
        f"val/<wnid>/*.JPEG, or {', '.join(ARCHIVES.values())}; found {found or 'nothing'}"
    )


def prepare_archives(root: Path) -> None:
    """Unpack the official archives into train/, val/ and meta.bin, once (torchvision's job)."""
    if (root / "meta.bin").is_file() and (root / "train").is_dir() and (root / "val").is_dir():
        return
    missing = [name for name in ARCHIVES.values() if not (root / name).is_file()]
    if missing:
        raise ImageNetDataError(
            f"layout=archives, but {', '.join(str(root / m) for m in missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing"
        )
    log.info("Unpacking the ImageNet archives in %s (once; this takes a while)", root)
    for split in ("train", "val"):
        try:
            datasets.ImageNet(str(root), split=split)
        except ModuleNotFoundError as err:
            raise ImageNetDataError(
                f"reading {root / ARCHIVES['devkit']} needs scipy: pip install scipy"
            ) from err
        except RuntimeError as err:
            # torchvision checks every archive's md5 and names the bad one.
            raise ImageNetDataError(f"{err} (in {root})") from err


def class_folders(split_dir: Path, placeholder: str = "<wnid>") -> list[str]:
    """The sorted class folders of train/ or val/, or an error saying how the layout is wrong
    (``placeholder`` names a class folder in it: ImageNet's wnids, or any class)."""
    if not split_dir.is_dir() and not split_dir.is_symlink():  # a link that loops: list_folder
        expected = "*.JPEG (layout=folders)" if placeholder == "<wnid>" else "<images>"
        raise ImageNetDataError(
            f"{split_dir} is missing: expected {split_dir}/{placeholder}/{expected}"
        )
    listing = list_folder(split_dir, _unlistable)
    folders = [path.name for path in listing.folders]
    loose = [path.name for path in listing.images]
    if loose:
        hint = (
            " (the raw validation archive is flat: put ILSVRC2012_img_val.tar and the devkit in "
            "the root and use layout=archives, which sorts it into class folders)"
            if split_dir.name == "val"
            else ""
        )
        raise ImageNetDataError(
            f"{split_dir} holds images directly ({loose[0]}, ...), not in {placeholder}/ class "
            f"folders{hint}"
        )
    if not folders:
        raise ImageNetDataError(
            f"{split_dir} has no class folders: expected {split_dir}/{placeholder}/"
        )
    return folders


def all_classes(root: Path, placeholder: str = "<wnid>", other: str = "val") -> list[str]:
    """The wnids of ``root``: train/ and ``other``/ (val/) must have the same class folders."""
    train_dir, val_dir = root / "train", root / other
    train_wnids = class_folders(train_dir, placeholder)
    val_wnids = class_folders(val_dir, placeholder)
    if train_wnids != val_wnids:
        only_train = sorted(set(train_wnids) - set(val_wnids))
        only_val = sorted(set(val_wnids) - set(train_wnids))
        raise ImageNetDataError(
            f"the class folders of {train_dir} and {val_dir} differ: only in train "
            f"{only_train[:5]}{' ...' if len(only_train) > 5 else ''}, only in val "
            f"{only_val[:5]}{' ...' if len(only_val) > 5 else ''}"
        )
    return train_wnids


def first_classes(root: Path, all_wnids: Sequence[str], classes: int) -> list[str]:
    """The first ``classes`` wnids in sorted order (data.classes), or an error if there are too
    few, or fewer than 2: one class would train a "classifier" that is always right."""
    if classes > len(all_wnids):
        raise ImageNetDataError(
            f"data.classes={classes}, but {root / 'train'} has only {len(all_wnids)} class "
            f"folders: set data.classes={len(all_wnids)} or fewer"
        )
    if classes < 2:
        which = (
            f"{root / 'train'} has a single class folder ({all_wnids[0]})"
            if len(all_wnids) == 1
            else f"data.classes={classes}"
        )
        raise ImageNetDataError(f"{which}: classification needs at least 2 classes")
    return list(all_wnids[:classes])


def imagenet_categories() -> list[str]:
    """The 1000 human-readable class names, in class-index (sorted wnid) order.

    torchvision ships them in its weights' metadata, so nothing is downloaded.
    """
    return list(models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(root: Path, all_wnids: Sequence[str], chosen: Sequence[str]) -> list[str]:
    """Human-readable names for the chosen wnids: the devkit's (meta.bin), else torchvision's
    1000 categories when the tree has all 1000 classes, else the wnids themselves."""
    meta = root / "meta.bin"
    if meta.is_file():
        wnid_to_classes = datasets.imagenet.load_meta_file(str(root))[0]
        return [wnid_to_classes.get(w, (w,))[0] for w in chosen]
    if len(all_wnids) == NUM_CLASSES:
        categories = imagenet_categories()
        index = {w: i for i, w in enumerate(all_wnids)}
        return [categories[index[w]] for w in chosen]
    log.info("no meta.bin and not all 1000 classes in %s: the wnids serve as class names", root)
    return list(chosen)


def list_images(class_dir: Path) -> list[str]:
    """The sorted image files of one class folder; an empty folder is an error."""
    # One level, os.scandir (list_folder) rather than ImageFolder's os.walk: it is faster on
    # 1.28M files, and an empty folder is reported by its path instead of by class name.
    files = [str(path) for path in list_folder(class_dir, _unlistable).images]
    if not files:
        raise ImageNetDataError(f"empty class folder {class_dir}: it holds no image files")
    return files


def split_samples(
    root: Path, wnids: Sequence[str], images_per_class: int | None, holdout_per_class: int
) -> dict[str, Samples]:
    """{"train", "val", "test"}: (path, label) samples, label the wnid's index in ``wnids``.

    train: the first ``images_per_class`` (all when None) of each class's training images,
    less the last ``holdout_per_class``; val: those held out, or the official validation
    images when none are; test: the official validation images.
    """
    train_dir, val_dir = root / "train", root / "val"
    held = holdout_per_class
    train: Samples = []
    holdout: Samples = []
    official: Samples = []
    for label, wnid in enumerate(wnids):
        files = list_images(train_dir / wnid)
        if held and len(files) <= held:
            raise ImageNetDataError(
                f"data.holdout_per_class={held}, but {train_dir / wnid} has only "
                f"{len(files)} images"
            )
        # Deterministic: the last N files (sorted) are held out, the first N kept.
        kept, out = files[: len(files) - held], files[len(files) - held :]
        train += [(p, label) for p in kept[:images_per_class]]
        holdout += [(p, label) for p in out]
        official += [(p, label) for p in list_images(val_dir / wnid)]
    return {"train": train, "val": holdout if held else official, "test": official}
