"""ILSVRC-2012 (ImageNet-1k), from the user's own copy: nothing can be downloaded.

``root`` holds class folders or the official archives (``zoo.data.imagenet.layout``). Two input
paths, picked by ``decode`` (``zoo.data.imagenet.io``):

- ``cpu``: DataLoader workers read, decode and augment each image (RandomResizedCrop + flip, or
  resize + centre crop) and hand over uint8 crops; the main process only normalises, on the
  device.
- ``gpu``: workers only read the file bytes; the batch is decoded by nvJPEG
  (``zoo.data.images.decode_jpegs``: TorchCodec's ``decode_jpeg(device="cuda")``) and cropped,
  flipped and normalised on the GPU in ``on_after_batch_transfer``, so the CPU cores don't hold
  the GPU back. Without a GPU the same code decodes on the CPU, which is how it is tested.

Unreadable files fail with their path (``ImageNetDataError``), or are skipped after a pre-scan
(``skip_corrupt``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, default_collate
from torchvision.transforms import v2

from zoo.data.imagenet.io import (
    DecodedImages,
    EncodedBatch,
    EncodedImages,
    ImageNetDataError,
    decode_batch,
    verify_image,
)
from zoo.data.imagenet.layout import (
    LAYOUTS,
    NUM_CLASSES,
    all_classes,
    class_names,
    first_classes,
    prepare_archives,
    resolve_layout,
    split_samples,
)
from zoo.data.imagenet.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    eval_transform,
    normalize,
    train_transform,
)
from zoo.data.images import MAX_IMAGE_PIXELS
from zoo.data.sampling import (
    LoaderPerSplit,
    ResumableTrainingOrder,
    WholeBatches,
    as_is,
    evaluation_share,
    split_batch_size,
)

log = logging.getLogger(__name__)

DECODERS = ("cpu", "gpu")


class ImageNetDataModule(LoaderPerSplit, ResumableTrainingOrder, pl.LightningDataModule):
    """ILSVRC-2012 classification: train on train/, validate and test on the official 50,000
    validation images (or validate on ``holdout_per_class`` training images per class)."""

    title = "ImageNet"  # how log lines name the dataset

    def __init__(
        self,
        root: str = "data/imagenet",
        layout: str = "auto",
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        image_size: int = 224,
        decode: str = "cpu",
        color_jitter: float = 0.0,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        classes: int | None = NUM_CLASSES,
        images_per_class: int | None = None,
        holdout_per_class: int = 0,
        skip_corrupt: bool = False,
        prefetch_factor: int = 2,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        resize_size: int | None = None,
        channels: int = 3,
    ) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"data.layout must be one of {LAYOUTS}, got {layout!r}")
        if decode not in DECODERS:
            raise ValueError(f"data.decode must be one of {DECODERS}, got {decode!r}")
        for key, value, low in (
            ("classes", classes, 1),
            ("images_per_class", images_per_class, 1),
            ("holdout_per_class", holdout_per_class, 0),
            ("resize_size", resize_size, 1),
        ):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}")
        if not isinstance(max_image_pixels, int) or max_image_pixels < 1:
            raise ValueError(
                f"data.max_image_pixels must be an integer >= 1, got {max_image_pixels!r}"
            )
        if not 0 <= color_jitter < 1:
            raise ValueError(f"data.color_jitter must be in [0, 1), got {color_jitter!r}")
        # Stored in the checkpoint, so evaluation can redo the same preprocessing.
        self.save_hyperparameters()
        self.root = Path(root).expanduser()
        self.num_classes = classes
        self.class_names: list[str] = []
        self.wnids: list[str] = []
        self.splits: dict[str, list[tuple[str, int]]] = {}
        self.skipped: list[str] = []
        self.normalize = self._normalization(mean, std, channels)
        self.train_transform = train_transform(
            image_size, color_jitter, auto_augment, random_erasing
        )
        self.eval_transform = eval_transform(image_size, resize_size)

    @staticmethod
    def _normalization(
        mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
    ) -> v2.Compose:
        """uint8 RGB batches -> float, normalised with ``mean``/``std`` (None: ImageNet's; the
        training run passes pretrained weights' own). ``channels=1`` makes them grey first, with
        the mean of three-channel statistics: a grey pixel is what an RGB network sees as three
        equal channels, as the first convolution of 1-channel pretrained weights assumes."""
        if channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels!r}")
        mean, std = tuple(mean or IMAGENET_MEAN), tuple(std or IMAGENET_STD)
        if channels == 1 and len(mean) == len(std) == 3:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(
                f"data.mean and data.std need {channels} value(s) each, got {mean} and {std}"
            )
        if not all(value > 0 for value in std):
            raise ValueError(f"data.std must be positive, got {std}")
        steps = [v2.Grayscale(num_output_channels=1)] if channels == 1 else []
        return v2.Compose([*steps, *normalize(mean, std).transforms])

    def resolved_layout(self) -> str:
        """``folders`` or ``archives``, as data.layout says or, for ``auto``, as root holds."""
        return resolve_layout(self.root, self.hparams.layout)

    def prepare_data(self) -> None:
        if self.resolved_layout() == "archives":
            prepare_archives(self.root)

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self._list_splits()
        if stage == "fit":
            self.training_order()

    def _list_splits(self) -> None:
        if self.resolved_layout() == "archives":
            prepare_archives(self.root)  # cheap when done; covers setup() without prepare_data()
        all_wnids = self._all_classes()
        k = self.hparams.classes or len(all_wnids)  # None: every class folder
        self.wnids = first_classes(self.root, all_wnids, k)
        self._check_model_outputs(k)
        self.class_names = self._class_names(all_wnids)
        self.splits = self._split_samples()
        if self.hparams.skip_corrupt:
            self._skip_unreadable()
        if (
            self.hparams.decode == "gpu"
            and self.trainer is not None
            and self.trainer.strategy.root_device.type != "cuda"
        ):
            log.warning(
                "data.decode=gpu without a GPU decodes each batch in the main process, far "
                "slower than data.decode=cpu (which decodes in the workers)"
            )
        sizes = " / ".join(f"{s} {len(v):,}" for s, v in self.splits.items())
        log.info("%s %s: %d classes, %s images", self.title, self.root, k, sizes)

    # What a folder of the user's own classes does differently (zoo.data.image_folder).
    def _all_classes(self) -> list[str]:
        return all_classes(self.root)

    def _class_names(self, all_wnids: Sequence[str]) -> list[str]:
        return class_names(self.root, all_wnids, self.wnids)

    def _split_samples(self) -> dict[str, list[tuple[str, int]]]:
        return split_samples(
            self.root, self.wnids, self.hparams.images_per_class, self.hparams.holdout_per_class
        )

    def _check_model_outputs(self, classes: int) -> None:
        # A label >= the model's outputs would otherwise fail deep in cross_entropy (on a GPU, as
        # an opaque device-side assert).
        module = self.trainer.lightning_module if self.trainer is not None else None
        outputs = getattr(getattr(module, "model", None), "num_classes", None)
        if outputs is not None and outputs != classes:
            raise ImageNetDataError(
                f"the model has {outputs} outputs but data.classes={classes} classes are used "
                f"from {self.root}: set data.classes (model.num_classes follows it)"
            )

    def _skip_unreadable(self) -> None:
        """Pre-scan every file with PIL (verify, then a full load) and drop the unreadable."""
        paths = sorted({p for samples in self.splits.values() for p, _ in samples})
        workers = max(1, self.hparams.num_workers)
        # Threads suffice: PIL releases the GIL while decoding.
        with ThreadPoolExecutor(workers) as pool:
            check = partial(verify_image, max_pixels=self.hparams.max_image_pixels)
            problems = dict(zip(paths, pool.map(check, paths), strict=True))
        bad = {p: why for p, why in problems.items() if why}
        if not bad:
            return
        self.skipped = sorted(bad)
        listing = "\n".join(f"  {p}: {bad[p]}" for p in self.skipped)
        log.warning("skipping %d unreadable image(s) (data.skip_corrupt):\n%s", len(bad), listing)
        for split, samples in self.splits.items():
            self.splits[split] = [(p, label) for p, label in samples if p not in bad]
            if not self.splits[split]:
                raise ImageNetDataError(
                    f"no readable images left in the {split} split of {self.root}"
                )

    def _dataset(self, split: str) -> Dataset:
        train = split == "train"
        samples = self.splits[split]
        limit = self.hparams.max_image_pixels
        if self.hparams.decode == "gpu":
            return EncodedImages(samples, train, limit)
        return DecodedImages(samples, self.train_transform if train else self.eval_transform, limit)

    def _loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        collate = dataset.collate if isinstance(dataset, EncodedImages) else default_collate
        workers = self.hparams.num_workers
        options: dict[str, Any] = {
            "num_workers": workers,
            "pin_memory": torch.cuda.is_available(),
            "persistent_workers": workers > 0,
            "prefetch_factor": self.hparams.prefetch_factor if workers > 0 else None,
        }
        overfitting = self.trainer is not None and self.trainer.overfit_batches > 0
        if split == "train" and not overfitting:
            order = self.training_order()
            # The shuffle resumes mid-epoch (zoo.training.resume), and each rank reads its
            # share. Workers seed their augmentations from the run's seed, not from the global
            # RNG, whose stream a resumed run restores exactly.
            return DataLoader(
                WholeBatches(dataset, collate),
                sampler=order,
                batch_size=None,
                collate_fn=as_is,
                generator=torch.Generator().manual_seed(order.seed),
                **options,
            )
        batch_size = split_batch_size(self.hparams, split)
        share = evaluation_share(self.trainer, dataset, split)
        return DataLoader(
            dataset, sampler=share, batch_size=batch_size, collate_fn=collate, **options
        )

    def transfer_batch_to_device(
        self, batch: Any, device: torch.device, dataloader_idx: int
    ) -> Any:
        if isinstance(batch, EncodedBatch):
            # nvJPEG reads the encoded bytes from host memory: only the labels move now.
            batch.labels = batch.labels.to(device, non_blocking=True)
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(
        self, batch: Any, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, EncodedBatch):
            device = batch.labels.device
            transform = self.train_transform if batch.train else self.eval_transform
            images = torch.stack([transform(image) for image in decode_batch(batch, device)])
            return self.normalize(images), batch.labels
        images, labels = batch
        return self.normalize(images), labels.long()

    def preprocess_images(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """uint8 RGB images (3, H, W) of any size, e.g. from files -> the evaluation batch."""
        return self.normalize(torch.stack([self.eval_transform(image) for image in images]))
