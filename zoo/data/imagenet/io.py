"""Reading ImageNet's files: the datasets of the two input paths, the batched nvJPEG decoding of
the gpu path, and the errors and pre-scan for files that can't be read.

- decode=cpu: ``DecodedImages``, each image decoded and transformed in a DataLoader worker;
- decode=gpu: ``EncodedImages`` hands over the JPEG bytes, collated into an ``EncodedBatch``,
  which ``decode_batch`` decodes on the device in one call (``zoo.data.images.decode_jpegs``).

Every file's header is checked before it is decoded (``zoo.data.images.read_header``): its
format by content, and at most ``max_pixels`` pixels (``data.max_image_pixels``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image
from torch.utils.data import Dataset

from zoo.core.errors import ZooError
from zoo.data import images

_JPEG_END = b"\xff\xd9"


class ImageNetDataError(ZooError, ValueError):
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


def _unreadable(path: str, reason: str) -> ImageNetDataError:
    return ImageNetDataError(
        f"cannot read image {path}: {reason}. Replace or delete the file, or set "
        "data.skip_corrupt=true to skip unreadable files"
    )


def read_bytes(path: str) -> torch.Tensor:
    """The file's bytes, or an ImageNetDataError naming it."""
    return images.read_bytes(path, _unreadable)


def decode_file(
    path: str, data: torch.Tensor | None = None, max_pixels: int = images.MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """A file as uint8 RGB (3, H, W): JPEG (grayscale and CMYK too), PNG, WebP or GIF, by its
    content (ImageNet's training set holds a PNG named .JPEG)."""
    return images.decode(path, "RGB", _unreadable, data, max_pixels)


def verify_image(path: str, max_pixels: int = images.MAX_IMAGE_PIXELS) -> str | None:
    """None if PIL reads the whole file, else why not (garbage and truncated files, and those
    over ``max_pixels``, alike)."""
    try:
        images.read_header(read_bytes(path), path, _unreadable, max_pixels)
        with Image.open(path) as image:
            image.verify()  # structure only: misses truncated data
        with Image.open(path) as image:
            image.load()
    except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
        return f"{type(err).__name__}: {err}"
    return None


class DecodedImages(Dataset):
    """decode=cpu: (uint8 crop, label), decoded and transformed in the worker."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        transform: Callable,
        max_pixels: int = images.MAX_IMAGE_PIXELS,
    ) -> None:
        self.samples = samples
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        return self.transform(decode_file(path, max_pixels=self.max_pixels)), label


def _nvjpeg_ready(header: images.Header, data: torch.Tensor) -> bool:
    """Whether the file is a complete RGB or grayscale JPEG, which nvJPEG decodes.

    The rest (CMYK, PNG, truncated files) is decoded on the CPU, where it either works or fails
    with a message, instead of nvJPEG returning garbage for it.
    """
    if header.format != "JPEG" or header.mode not in ("RGB", "L"):
        return False
    tail = data[-64:].numpy().tobytes()  # a truncated file lacks the end-of-image marker
    return tail.rstrip(b"\0").endswith(_JPEG_END)


@dataclass
class EncodedBatch:
    """decode=gpu: what the workers hand over, decoded in ``on_after_batch_transfer``.

    The JPEG bytes of a batch travel as one flat tensor (``jpeg_bytes``, split by
    ``jpeg_sizes``): one shared-memory block per batch instead of one per image. Images nvJPEG
    can't take (size 0) come decoded by the worker, in batch order, in ``decoded``.
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

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        train: bool,
        max_pixels: int = images.MAX_IMAGE_PIXELS,
    ) -> None:
        self.samples = samples
        self.train = train
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, bool, int, str]:
        path, label = self.samples[index]
        data = read_bytes(path)
        header = images.read_header(data, path, _unreadable, self.max_pixels)
        if _nvjpeg_ready(header, data):
            return data, True, label, path
        return decode_file(path, data, self.max_pixels), False, label, path

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
    decoded_images: list[torch.Tensor] = [torch.empty(0)] * len(batch.jpeg_sizes)
    done = iter(batch.decoded)
    for i, size in enumerate(batch.jpeg_sizes):
        if not size:
            decoded_images[i] = next(done).to(device, non_blocking=True)
    if not todo:
        return decoded_images
    try:
        decoded = images.decode_jpegs(jpegs, device)
    except RuntimeError:
        decoded = [_decode_one(d, batch.paths[i], device) for d, i in zip(jpegs, todo, strict=True)]
    for i, image in zip(todo, decoded, strict=True):
        decoded_images[i] = image.expand(3, -1, -1) if image.shape[0] == 1 else image
    return decoded_images


def _decode_one(data: torch.Tensor, path: str, device: torch.device) -> torch.Tensor:
    try:
        (image,) = images.decode_jpegs([data], device)
        return image
    except RuntimeError:
        return decode_file(path, data).to(device)
