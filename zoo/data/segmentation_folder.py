"""Segmentation data of one's own: ``root/images/`` and ``root/masks/`` with matching names.

::

    root/images/cat_01.jpg      root/masks/cat_01.png
    root/images/sub/dog_02.png  root/masks/sub/dog_02.png

A mask is a single-channel PNG (8- or 16-bit) whose pixel values are class indices, 0 to
``num_classes - 1``, and has its image's height and width. Images may be PNG, JPEG or WebP.
The pairs are split into train, val and test by ``val_fraction`` / ``test_fraction`` with a
seeded shuffle, so the same folder and seed give the same split.

Every pair is read once in ``setup`` (``zoo.data.images``: the header first, so a file over
``max_image_pixels`` is refused before it is decoded), checked, and resized to
``image_size`` x ``image_size`` (images bilinearly, masks by nearest neighbour); the checks
fail with the file's name. The pairs then stay in memory as uint8 tensors, ``N x (channels +
1) x image_size^2`` bytes (1,000 RGB images at 256 px: 262 MB), and are batched like MNIST.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from zoo.core.errors import ConfigError, ZooError
from zoo.core.files import path_problem
from zoo.core.schema import option
from zoo.data.base import (
    DataSchema,
    Normalization,
    batch_size_field,
    channels_field,
    eval_batch_size_field,
    image_size_field,
    num_workers_field,
)
from zoo.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    MODES,
    decode,
    list_folder,
    read_bytes,
    read_header,
)
from zoo.data.in_memory import SEGMENTATION_SPLITS, InMemorySegmentationDataModule, Split

log = logging.getLogger(__name__)
# Masks are read as up to 16-bit PNGs.
MAX_CLASSES = 65536


class SegmentationDataError(ZooError, ValueError):
    """Segmentation data that can't be used as it is; the message names the file."""


@dataclasses.dataclass(kw_only=True)
class SegmentationFolderConfig(DataSchema):
    """zoo/configs/data/segmentation_folder.yaml."""

    title: ClassVar[str] = "data=segmentation_folder"
    must_match: ClassVar[tuple[str, ...]] = (
        *DataSchema.must_match,
        "val_fraction",
        "test_fraction",
        "split_seed",
    )

    name: str = "segmentation_folder"
    root: str
    image_size: int | None = image_size_field(256)
    val_fraction: float = option(0.1, gt=0, lt=1)
    test_fraction: float = option(0.1, gt=0, lt=1)
    split_seed: int = 12345
    batch_size: int = batch_size_field(8)
    eval_batch_size: int | None = eval_batch_size_field()
    num_workers: int = num_workers_field(0)
    device_resident: bool = True
    max_image_pixels: int = option(MAX_IMAGE_PIXELS, ge=1)
    channels: int = channels_field(3, 1, 3)
    num_classes: int = option(ge=2, le=MAX_CLASSES)  # required: what the masks hold
    class_names: list[str] | None = None

    def check(self, key: str) -> None:
        super().check(key)
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"{key}.val_fraction + {key}.test_fraction must be < 1, got {self.val_fraction} "
                f"+ {self.test_fraction}: nothing would be left to train on"
            )


def _files(folder: Path, suffixes: Sequence[str]) -> dict[Path, Path]:
    """{path relative to folder, without suffix: path} for the visible files with a suffix."""
    return {
        path.relative_to(folder).with_suffix(""): path
        for path in list_folder(folder, _unreadable, recursive=True).images
        if path.suffix.lower() in suffixes
    }


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs, sorted; an image without a mask is an error that names it."""
    images = _files(root / "images", IMAGE_SUFFIXES)
    masks = _files(root / "masks", (".png",))
    if not images:
        raise SegmentationDataError(f"{root / 'images'} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    missing = [path for key, path in images.items() if key not in masks]
    if missing:
        shown = ", ".join(str(p) for p in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        expected = root / "masks" / missing[0].relative_to(root / "images").with_suffix(".png")
        raise SegmentationDataError(
            f"no mask for image {shown}{more} (expected e.g. {expected}: every image in "
            f"{root / 'images'} needs a PNG mask of the same name in {root / 'masks'})"
        )
    orphans = sorted(set(masks) - set(images))
    if orphans:
        log.warning(
            "%d mask(s) without an image are ignored, e.g. %s", len(orphans), masks[orphans[0]]
        )
    return [(images[key], masks[key]) for key in images]


def _unreadable(path: str, reason: str) -> SegmentationDataError:
    return SegmentationDataError(f"cannot read {path}: {reason}")


def read_pair(
    image_path: Path,
    mask_path: Path,
    channels: int,
    num_classes: int,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image as uint8 (channels, H, W) and its mask as int64 (H, W), checked."""
    image = decode(image_path, MODES[channels], _unreadable, max_pixels=max_pixels)
    mask_data = read_bytes(mask_path, _unreadable)
    header = read_header(mask_data, mask_path, _unreadable, max_pixels)
    if header.format != "PNG":
        # A lossy or animated format would invent labels; decoded by content, it would pass.
        raise SegmentationDataError(
            f"mask {mask_path} is a {header.format} image, not a PNG: masks must be lossless "
            "single-channel PNGs of class indices"
        )
    if header.mode == "P":
        # A palette PNG decodes to the colours of its palette, not to its indices.
        raise SegmentationDataError(
            f"mask {mask_path} is a palette PNG: it decodes as colours, not class "
            "indices; save the masks as single-channel (greyscale) PNGs of class indices"
        )
    mask = decode(mask_path, "UNCHANGED", _unreadable, mask_data, max_pixels, keep_depth=True)
    if mask.shape[0] != 1:
        raise SegmentationDataError(
            f"mask {mask_path} has {mask.shape[0]} channels: masks must be single-channel PNGs "
            "whose pixel values are class indices, not colours"
        )
    if mask.shape[1:] != image.shape[1:]:
        (mh, mw), (ih, iw) = mask.shape[1:], image.shape[1:]
        raise SegmentationDataError(
            f"mask {mask_path} is {mw}x{mh} pixels but its image {image_path} is {iw}x{ih}"
        )
    mask = mask[0].long()
    if int(mask.max()) >= num_classes:
        bad = mask.unique()
        bad = bad[bad >= num_classes].tolist()
        raise SegmentationDataError(
            f"mask {mask_path} holds label value(s) {bad[:10]} >= num_classes={num_classes}: "
            f"labels must be 0..{num_classes - 1} (or set data.num_classes)"
        )
    return image, mask


class SegmentationFolderDataModule(InMemorySegmentationDataModule):
    """The user's own images and PNG masks of class indices, split by fractions."""

    schema = SegmentationFolderConfig

    def __init__(
        self,
        root: str,
        num_classes: int,
        channels: int = 3,
        image_size: int = 256,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 12345,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        device_resident: bool = True,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        root_path = Path(root).expanduser()
        problem = path_problem(root_path, "folder")
        if root_path.exists() and problem is not None:
            raise SegmentationDataError(
                f"data.root={root} {problem}: it must hold images/ and masks/ with matching "
                "file names"
            )
        for folder in ("images", "masks"):
            if not (root_path / folder).is_dir():
                raise SegmentationDataError(
                    f"data.root={root}: there is no {root_path / folder}/ folder (expected "
                    "root/images/ and root/masks/ with matching file names)"
                )
        self.save_hyperparameters()
        self.root = root_path
        self.num_classes = num_classes
        self.channels = channels
        self._normalization: Normalization | None = None

    @property
    def class_names(self) -> list[str]:
        """data.class_names, else the class indices."""
        given = self.hparams.class_names
        return [str(name) for name in given] if given else [str(i) for i in range(self.num_classes)]

    def split_pairs(self, pairs: list[tuple[Path, Path]]) -> dict[str, list[tuple[Path, Path]]]:
        hp = self.hparams
        count = len(pairs)
        n_val, n_test = round(count * hp.val_fraction), round(count * hp.test_fraction)
        if min(n_val, n_test, count - n_val - n_test) < 1:
            raise SegmentationDataError(
                f"{self.root} holds {count} image/mask pair(s): too few for train, val and test "
                f"splits with data.val_fraction={hp.val_fraction} and "
                f"data.test_fraction={hp.test_fraction}"
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(hp.split_seed))
        ranges = {
            "val": (0, n_val),
            "test": (n_val, n_val + n_test),
            "train": (n_val + n_test, count),
        }
        return {
            split: [pairs[int(i)] for i in order[start:stop]]
            for split, (start, stop) in ranges.items()
        }

    def _load(self, pairs: list[tuple[Path, Path]]) -> Split:
        hp = self.hparams
        size = [hp.image_size] * 2
        images, masks = [], []
        mask_dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        for image_path, mask_path in pairs:
            image, mask = read_pair(
                image_path, mask_path, self.channels, self.num_classes, hp.max_image_pixels
            )
            images.append(TF.resize(image, size, antialias=True))
            mask = TF.resize(mask[None], size, interpolation=InterpolationMode.NEAREST_EXACT)
            masks.append(mask[0].to(mask_dtype))
        return torch.stack(images), torch.stack(masks)

    def load_splits(self) -> dict[str, Split]:
        by_split = self.split_pairs(pair_files(self.root))
        return {split: self._load(by_split[split]) for split in SEGMENTATION_SPLITS}

    def normalization(self) -> Normalization:
        """The training split's own statistics (the user's images may look like anything); the
        splits are loaded for them if setup() has not loaded them yet."""
        if self._normalization is None:
            self.load()
            scaled = self.splits["train"].tensors[0].float().div(255)
            mean = scaled.mean(dim=(0, 2, 3))
            std = scaled.std(dim=(0, 2, 3)).clamp_min(1e-3)
            self._normalization = Normalization(tuple(mean.tolist()), tuple(std.tolist()))
        return self._normalization
