"""Image files read with torchvision.io, shared by the ImageNet and image-folder datamodules:
which names count as images, and reading and decoding that fails as one line naming the file.

Each datamodule raises its own error class: it passes ``unreadable(path, reason)``, which builds
that error from the file and torchvision's reason, stripped to one line.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torchvision.io import ImageReadMode, decode_image, read_file

# The formats torchvision.io decodes (GIF too, which no datamodule here takes): a name listed
# with another suffix (BMP, TIFF, ...) would only fail later, at decoding.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")

Unreadable = Callable[[str, str], Exception]
StrPath = str | os.PathLike[str]


def is_image_file(name: StrPath) -> bool:
    """Whether the file name has one of ``IMAGE_SUFFIXES``, in any case (ImageNet's .JPEG)."""
    return os.fspath(name).lower().endswith(IMAGE_SUFFIXES)


@contextmanager
def quiet_codecs() -> Iterator[None]:
    """torchvision 0.29 deprecates its image codecs in favour of TorchCodec, but they still work
    and ship the batched nvJPEG decoder ImageNet's gpu path is built on: silence just that
    warning (locally, as test runners reset global warning filters)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities of TorchVision"
        )
        yield


def codec_reason(err: Exception) -> str:
    """The first line of a codec error, without the C++ source location torchvision puts first
    ("decode_jpeg, /path/to/decode_jpeg.cpp:171, ")."""
    return re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip()).splitlines()[0]


@contextmanager
def _named(path: StrPath, unreadable: Unreadable) -> Iterator[None]:
    try:
        with quiet_codecs():
            yield
    except (OSError, RuntimeError) as err:
        raise unreadable(os.fspath(path), codec_reason(err)) from err


def read_bytes(path: StrPath, unreadable: Unreadable) -> torch.Tensor:
    """The file's bytes as a uint8 tensor, or ``unreadable(path, reason)`` raised."""
    with _named(path, unreadable):
        return read_file(os.fspath(path))


def decode(
    path: StrPath,
    mode: ImageReadMode,
    unreadable: Unreadable,
    data: torch.Tensor | None = None,
) -> torch.Tensor:
    """The image as uint8 (C, H, W) in ``mode``, from ``data`` (the file's bytes, read when
    None), or ``unreadable(path, reason)`` raised."""
    data = read_bytes(path, unreadable) if data is None else data
    with _named(path, unreadable):
        return decode_image(data, mode=mode)
