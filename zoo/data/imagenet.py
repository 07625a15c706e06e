"""ILSVRC-2012 (ImageNet-1k), from the user's own copy: nothing can be downloaded.

Two layouts under ``root``:

- ``folders``: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG``;
- ``archives``: ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and
  ILSVRC2012_devkit_t12.tar.gz, which ``torchvision.datasets.ImageNet`` unpacks once into the
  folder layout (plus ``meta.bin``, the devkit's class names).

Two input paths, picked by ``decode``:

- ``cpu``: DataLoader workers read, decode and augment each image (RandomResizedCrop + flip, or
  resize + centre crop) and hand over uint8 crops; the main process only normalises, on the
  device.
- ``gpu``: workers only read the file bytes; the batch is decoded by nvJPEG
  (``torchvision.io.decode_jpeg(device="cuda")``) and cropped, flipped and normalised on the GPU
  in ``on_after_batch_transfer``, so the CPU cores don't hold the GPU back. Without a GPU the same
  code decodes on the CPU, which is how it is tested.

Unreadable files fail with their path (``ImageNetDataError``), or are skipped after a pre-scan
(``skip_corrupt``).
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    default_collate,
)
from torchvision import datasets, models
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
from torchvision.transforms import v2

from zoo.data.sampling import ResumableTrainingOrder, WholeBatches, as_is

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 1000
# Evaluation resizes to 256 for a 224 crop (torchvision's reference); other sizes keep the ratio.
CROP_RATIO = 224 / 256
ARCHIVES = {
    "train": "ILSVRC2012_img_train.tar",
    "val": "ILSVRC2012_img_val.tar",
    "devkit": "ILSVRC2012_devkit_t12.tar.gz",
}
LAYOUTS = ("auto", "folders", "archives")
DECODERS = ("cpu", "gpu")
_JPEG_START, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"


@contextmanager
def _codec() -> Iterator[None]:
    """torchvision 0.29 deprecates its image codecs in favour of TorchCodec, but they still work
    and ship the batched nvJPEG decoder this module is built on: silence just that warning
    (locally, as test runners reset global warning filters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities of TorchVision"
        )
        yield


class ImageNetDataError(ValueError):
    """ImageNet files that can't be used as they are; the message names the path.

    An exception raised in a DataLoader worker comes back to the main process as
    ``type(err)("Caught ... in DataLoader worker process N. Original Traceback ...")``; this
    class keeps only its own message from that, so the user sees one line with the path.
    """

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        if message.startswith("Caught ") and marker in message:
            message = message.rsplit(marker, 1)[1].strip()
        super().__init__(message)


def imagenet_categories() -> list[str]:
    """The 1000 human-readable class names, in class-index (sorted wnid) order.

    torchvision ships them in its weights' metadata, so nothing is downloaded.
    """
    return list(models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def eval_resize(image_size: int) -> int:
    """256 for 224 (torchvision's reference), scaled in proportion for other crop sizes."""
    return round(image_size / CROP_RATIO)


def train_transform(image_size: int, color_jitter: float = 0.0) -> v2.Compose:
    """Per-image training augmentation, uint8 (3, H, W) -> uint8 (3, S, S), on any device."""
    steps: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, antialias=True),
        v2.RandomHorizontalFlip(),
    ]
    if color_jitter > 0:
        steps.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(steps)


def eval_transform(image_size: int) -> v2.Compose:
    """Per-image evaluation preprocessing: shorter side to eval_resize, then a centre crop."""
    return v2.Compose(
        [v2.Resize(eval_resize(image_size), antialias=True), v2.CenterCrop(image_size)]
    )


def normalize() -> v2.Compose:
    """Batched on the device: uint8 (N, 3, S, S) -> float, ImageNet mean/std."""
    return v2.Compose(
        [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )


def _reason(err: Exception) -> str:
    # torchvision's codec errors start with "decode_jpeg, /path/to/decode_jpeg.cpp:171, ".
    return re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip()).splitlines()[0]


def unreadable(path: str, err: Exception) -> ImageNetDataError:
    return ImageNetDataError(
        f"cannot read image {path}: {_reason(err)}. Replace or delete the file, or set "
        "data.skip_corrupt=true to skip unreadable files"
    )


def read_bytes(path: str) -> torch.Tensor:
    try:
        with _codec():
            return read_file(path)
    except (OSError, RuntimeError) as err:
        raise unreadable(path, err) from err


def decode_file(path: str, data: torch.Tensor | None = None) -> torch.Tensor:
    """A file as uint8 RGB (3, H, W): JPEG (grayscale and CMYK too) or any format torchvision
    reads (ImageNet's training set holds a PNG named .JPEG)."""
    data = read_bytes(path) if data is None else data
    try:
        with _codec():
            return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise unreadable(path, err) from err


def _nvjpeg_ready(data: torch.Tensor) -> bool:
    """Whether the bytes look like a complete RGB or grayscale JPEG, which nvJPEG decodes.

    The rest (CMYK, PNG, truncated files) is decoded on the CPU, where it either works or fails
    with a message, instead of nvJPEG returning garbage for it.
    """
    raw = data.numpy().tobytes()
    if not (raw.startswith(_JPEG_START) and raw.rstrip(b"\0").endswith(_JPEG_END)):
        return False
    try:
        with Image.open(io.BytesIO(raw)) as image:  # reads the header only
            return image.format == "JPEG" and image.mode in ("RGB", "L")
    except (OSError, UnidentifiedImageError):
        return False


class DecodedImages(Dataset):
    """decode=cpu: (uint8 crop, label), decoded and transformed in the worker."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable) -> None:
        self.samples = samples
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(decode_file(path)), label


@dataclass
class EncodedBatch:
    """decode=gpu: what the workers hand over, decoded in ``on_after_batch_transfer``.

    The JPEG bytes of a batch travel as one flat tensor (``jpeg_bytes``, split by
    ``jpeg_sizes``): one shared-memory block per batch instead of one per image, and tensors from
    ``read_file`` can't be shared between processes at all. Images nvJPEG can't take (size 0)
    come decoded by the worker, in batch order, in ``decoded``.
    """

    jpeg_bytes: torch.Tensor
    jpeg_sizes: list[int]
    decoded: list[torch.Tensor]
    labels: torch.Tensor
    paths: list[str]
    train: bool

    def pin_memory(self) -> EncodedBatch:
        """Called by the DataLoader's pin_memory thread (it leaves unknown classes unpinned)."""
        self.jpeg_bytes = self.jpeg_bytes.pin_memory()
        self.decoded = [image.pin_memory() for image in self.decoded]
        self.labels = self.labels.pin_memory()
        return self


class EncodedImages(Dataset):
    """decode=gpu: (JPEG bytes, or the image decoded when nvJPEG can't take it; label; path)."""

    def __init__(self, samples: Sequence[tuple[str, int]], train: bool) -> None:
        self.samples = samples
        self.train = train

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int, str]:
        path, label = self.samples[index]
        data = read_bytes(path)
        if _nvjpeg_ready(data):
            return data, True, label, path
        return decode_file(path, data), False, label, path

    def collate(self, items: list[tuple[torch.Tensor, bool, int, str]]) -> EncodedBatch:
        data, encoded, labels, paths = zip(*items, strict=True)
        jpegs = [d for d, e in zip(data, encoded, strict=True) if e]
        return EncodedBatch(
            jpeg_bytes=torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
            jpeg_sizes=[len(d) if e else 0 for d, e in zip(data, encoded, strict=True)],
            decoded=[d for d, e in zip(data, encoded, strict=True) if not e],
            labels=torch.tensor(labels),
            paths=list(paths),
            train=self.train,
        )


def decode_batch(batch: EncodedBatch, device: torch.device) -> list[torch.Tensor]:
    """The batch's images as uint8 (3, H, W) on ``device``, the JPEGs in one batched call.

    If the batched call fails, each image is retried alone (then on the CPU), so that a bad file
    is reported by its path.
    """
    todo = [i for i, size in enumerate(batch.jpeg_sizes) if size]
    jpegs = torch.split(batch.jpeg_bytes, [batch.jpeg_sizes[i] for i in todo])
    images: list[torch.Tensor] = [torch.empty(0)] * len(batch.jpeg_sizes)
    done = iter(batch.decoded)
    for i, size in enumerate(batch.jpeg_sizes):
        if not size:
            images[i] = next(done).to(device, non_blocking=True)
    if not todo:
        return images
    try:
        with _codec():
            decoded = decode_jpeg(list(jpegs), mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        decoded = [_decode_one(d, batch.paths[i], device) for d, i in zip(jpegs, todo, strict=True)]
    for i, image in zip(todo, decoded, strict=True):
        images[i] = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return images


def _decode_one(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    try:
        with _codec():
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_file(path, data).to(device)


def verify_image(path: str) -> str | None:
    """None if PIL reads the whole file, else why not (garbage and truncated files alike)."""
    try:
        with Image.open(path) as image:
            image.verify()  # structure only: misses truncated data
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(err).__name__}: {err}"
    return None


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


def class_folders(split_dir: Path) -> list[str]:
    """The sorted class folders of train/ or val/, or an error saying how the layout is wrong."""
    if not split_dir.is_dir():
        raise ImageNetDataError(
            f"{split_dir} is missing: expected {split_dir}/<wnid>/*.JPEG (layout=folders)"
        )
    entries = list(os.scandir(split_dir))
    folders = sorted(e.name for e in entries if e.is_dir())
    loose = [e.name for e in entries if e.is_file() and is_image_file(e.name)]
    if loose:
        hint = (
            " (the raw validation archive is flat: put ILSVRC2012_img_val.tar and the devkit in "
            "the root and use layout=archives, which sorts it into class folders)"
            if split_dir.name == "val"
            else ""
        )
        raise ImageNetDataError(
            f"{split_dir} holds images directly ({loose[0]}, ...), not in <wnid>/ class "
            f"folders{hint}"
        )
    if not folders:
        raise ImageNetDataError(f"{split_dir} has no class folders: expected {split_dir}/<wnid>/")
    return folders


def list_images(class_dir: Path) -> list[str]:
    """The sorted image files of one class folder; an empty folder is an error."""
    # os.scandir rather than ImageFolder's os.walk: it is faster on 1.28M files, and an empty
    # folder is reported by its path instead of by class name.
    files = sorted(e.path for e in os.scandir(class_dir) if e.is_file() and is_image_file(e.name))
    if not files:
        raise ImageNetDataError(f"empty class folder {class_dir}: it holds no image files")
    return files


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


class ImageNetDataModule(ResumableTrainingOrder, pl.LightningDataModule):
    """ILSVRC-2012 classification: train on train/, validate and test on the official 50,000
    validation images (or validate on ``holdout_per_class`` training images per class)."""

    channels = 3

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
        classes: int = NUM_CLASSES,
        images_per_class: int | None = None,
        holdout_per_class: int = 0,
        skip_corrupt: bool = False,
        prefetch_factor: int = 2,
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
        ):
            if value is not None and (not isinstance(value, int) or value < low):
                raise ValueError(f"data.{key} must be an integer >= {low}, got {value!r}")
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
        self.normalize = normalize()
        self.train_transform = train_transform(image_size, color_jitter)
        self.eval_transform = eval_transform(image_size)

    def resolved_layout(self) -> str:
        if not self.root.is_dir():
            raise ImageNetDataError(
                f"ImageNet root {self.root} does not exist: set data.root to the folder holding "
                "train/ and val/ (or the official archives)"
            )
        layout = self.hparams.layout
        if layout != "auto":
            return layout
        if (self.root / "train").is_dir() or (self.root / "val").is_dir():
            return "folders"
        if any((self.root / name).is_file() for name in ARCHIVES.values()):
            return "archives"
        found = sorted(p.name for p in self.root.iterdir())[:5]
        raise ImageNetDataError(
            f"{self.root} is not an ImageNet root: expected train/<wnid>/*.JPEG and "
            f"val/<wnid>/*.JPEG, or {', '.join(ARCHIVES.values())}; found {found or 'nothing'}"
        )

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
        train_dir, val_dir = self.root / "train", self.root / "val"
        all_wnids = class_folders(train_dir)
        val_wnids = class_folders(val_dir)
        if all_wnids != val_wnids:
            only_train = sorted(set(all_wnids) - set(val_wnids))
            only_val = sorted(set(val_wnids) - set(all_wnids))
            raise ImageNetDataError(
                f"the class folders of {train_dir} and {val_dir} differ: only in train "
                f"{only_train[:5]}{' ...' if len(only_train) > 5 else ''}, only in val "
                f"{only_val[:5]}{' ...' if len(only_val) > 5 else ''}"
            )
        k = self.hparams.classes
        if k > len(all_wnids):
            raise ImageNetDataError(
                f"data.classes={k}, but {train_dir} has only {len(all_wnids)} class folders: "
                f"set data.classes={len(all_wnids)} or fewer"
            )
        self._check_model_outputs(k)
        self.wnids = all_wnids[:k]
        self.class_names = class_names(self.root, all_wnids, self.wnids)

        held = self.hparams.holdout_per_class
        per_class = self.hparams.images_per_class
        train, holdout, official = [], [], []
        for label, wnid in enumerate(self.wnids):
            files = list_images(train_dir / wnid)
            if held and len(files) <= held:
                raise ImageNetDataError(
                    f"data.holdout_per_class={held}, but {train_dir / wnid} has only "
                    f"{len(files)} images"
                )
            # Deterministic: the last N files (sorted) are held out, the first N kept.
            kept, out = files[: len(files) - held], files[len(files) - held :]
            train += [(p, label) for p in kept[:per_class]]
            holdout += [(p, label) for p in out]
            official += [(p, label) for p in list_images(val_dir / wnid)]
        self.splits = {
            "train": train,
            "val": holdout if held else official,
            "test": official,
        }
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
        log.info("ImageNet %s: %d classes, %s images", self.root, k, sizes)

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
            problems = dict(zip(paths, pool.map(verify_image, paths), strict=True))
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
        if self.hparams.decode == "gpu":
            return EncodedImages(samples, train)
        return DecodedImages(samples, self.train_transform if train else self.eval_transform)

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
            # The shuffle resumes mid-epoch (zoo.fault_tolerance), and each rank reads its
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
        batch_size = self.hparams.batch_size
        if split != "train":
            batch_size = self.hparams.eval_batch_size or batch_size
        return DataLoader(dataset, batch_size=batch_size, collate_fn=collate, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

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


class ImageNetSyntheticDataModule(pl.LightningDataModule):
    """SYNTHETIC: random images and labels with ImageNet's shapes, for throughput only.

    One fixed random batch lives on the training device and every step reuses it, so the
    measurement is the model's alone; the accuracies it logs mean nothing.
    """

    channels = 3

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int = 224,
        classes: int = NUM_CLASSES,
        train_size: int = 1_281_167,
        val_size: int = 50_000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.num_classes = classes
        self.class_names = [f"synthetic_{i}" for i in range(classes)]
        self.labels: dict[str, torch.Tensor] = {}
        self._images: torch.Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.labels:
            return
        log.warning(
            "data=imagenet_synthetic: random tensors with ImageNet's shapes (3x%d x %d, %d "
            "classes), NOT ImageNet; for throughput measurements only, accuracies mean nothing",
            self.hparams.image_size,
            self.hparams.image_size,
            self.hparams.classes,
        )
        generator = torch.Generator().manual_seed(self.hparams.seed)
        sizes = {"train": self.hparams.train_size, "val": self.hparams.val_size}
        sizes["test"] = sizes["val"]
        self.labels = {
            split: torch.randint(self.hparams.classes, (n,), generator=generator)
            for split, n in sizes.items()
        }

    def _loader(self, split: str) -> DataLoader:
        labels = self.labels[split]
        batch_size = self.hparams.batch_size
        if split != "train":
            batch_size = self.hparams.eval_batch_size or batch_size
        order = RandomSampler(labels) if split == "train" else SequentialSampler(labels)
        # One index per batch (BatchSampler as the sampler): only labels cross the loader.
        return DataLoader(
            labels,
            sampler=BatchSampler(order, batch_size, drop_last=False),
            batch_size=None,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(
        self, batch: torch.Tensor, dataloader_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        labels = batch.long()
        size = self.hparams.image_size
        largest = max(self.hparams.batch_size, self.hparams.eval_batch_size or 0)
        if self._images is None or self._images.device != labels.device:
            generator = torch.Generator(labels.device).manual_seed(self.hparams.seed)
            self._images = torch.randn(
                largest, 3, size, size, generator=generator, device=labels.device
            )
        return self._images[: len(labels)], labels
