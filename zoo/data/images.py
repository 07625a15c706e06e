"""Image files, read, checked, decoded and written in one place, for every datamodule, ``predict=``
and the tests: which names count as images, how a folder is listed (``list_folder``), a header
check before any pixel is decoded, and failures as one line naming the file.

- Decoding and encoding are TorchCodec's (``torchcodec.decoders`` / ``torchcodec.encoders``):
  torchvision's image codecs are deprecated since 0.29 in its favour. TorchCodec decodes JPEG,
  PNG, WebP and GIF on the CPU, and a list of JPEGs on a GPU in one nvJPEG call
  (``decode_jpegs``, the ImageNet datamodule's gpu path).
- The format is found from the bytes, never from the name: a GIF or WebP behind a ``.png`` or
  ``.jpg`` name decodes as what it is.
- Before decoding, PIL reads the header only (``Image.open`` is lazy) for the size: an image of
  more than ``max_pixels`` pixels (a 2.4 MB PNG can claim 50,000 x 50,000, 7.5 GB decoded) is
  refused, like PIL's own decompression-bomb guard, whose default it shares. Animated images
  are refused too: which frame was meant is not ours to guess, and every frame would be decoded.

Each caller raises its own error class: it passes ``unreadable(path, reason)``, which builds that
error from the file and the reason, one line.
"""

from __future__ import annotations

import errno
import io
import os
import re
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchcodec.decoders import decode_image, decode_jpeg
from torchcodec.encoders import JpegEncoder, PngEncoder

# The names the datamodules and predict= pick up in folders (GIF decodes too, by content, but is
# not looked for). A name listed with another suffix (BMP, TIFF, ...) would only fail later.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
# What PIL may parse the header of and TorchCodec decodes: PIL knows dozens of formats, each a
# parser an untrusted file could reach; MPO is how PIL names a JPEG with a second picture.
DECODED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
# PIL's own default decompression-bomb limit (Image.MAX_IMAGE_PIXELS, 89,478,485 px: a
# 9,459 x 9,459 image, 268 MB decoded as RGB).
MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
# Channels -> decoding mode. UNCHANGED (a mask's own channels and bit depth) is asked by name.
MODES = {1: "GRAY", 3: "RGB"}

Mode = Literal["GRAY", "RGB", "UNCHANGED"]
Unreadable = Callable[[str, str], Exception]
StrPath = str | os.PathLike[str]

_PIL_LIMIT_LOCK = threading.Lock()  # the ImageNet pre-scan reads headers in threads


class Header(NamedTuple):
    """What an image file says about itself before any pixel is decoded."""

    format: str  # PIL's name: PNG, JPEG, MPO, WEBP, GIF
    mode: str  # PIL's mode: L, RGB, CMYK, P, I;16, ...
    width: int
    height: int


def is_image_file(name: StrPath) -> bool:
    """Whether the file name has one of ``IMAGE_SUFFIXES``, in any case (ImageNet's .JPEG)."""
    return os.fspath(name).lower().endswith(IMAGE_SUFFIXES)


class FolderListing(NamedTuple):
    """What a folder holds that the zoo reads: its subfolders and its image files, sorted."""

    folders: list[Path]
    images: list[Path]


def list_folder(folder: StrPath, unreadable: Unreadable, recursive: bool = False) -> FolderListing:
    """The visible (not dot-named) subfolders and image files (``is_image_file``) of ``folder``,
    and with ``recursive`` the image files of its subfolders too, sorted as paths sort; every
    datamodule's and ``predict=``'s one way to look into a folder.

    An entry that can't be told apart as a file or a folder (a symbolic link loop, a folder
    that can't be read) raises ``unreadable(path, reason)``: Python's own ``is_dir`` raises it
    as a traceback, and ``Path.rglob`` skips it without a word. Symbolic links are followed,
    except to folders inside a recursive scan (as ``Path.rglob``): a link to a parent would
    loop."""
    folders: list[Path] = []
    images: list[Path] = []
    for entry in _entries(folder, unreadable):
        try:
            is_folder, is_file = entry.is_dir(), entry.is_file()
        except OSError as err:
            raise unreadable(entry.path, _os_reason(err)) from err
        if is_folder:
            folders.append(Path(entry.path))
            if recursive and not entry.is_symlink():
                images += list_folder(entry.path, unreadable, recursive=True).images
        elif is_file and is_image_file(entry.name):
            images.append(Path(entry.path))
    return FolderListing(folders, images)


def _entries(folder: StrPath, unreadable: Unreadable) -> list[os.DirEntry[str]]:
    """The visible entries of ``folder``, by name: a folder's own contents come right after its
    name, as sorted paths have them."""
    try:
        with os.scandir(folder) as entries:
            return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as err:
        raise unreadable(os.fspath(folder), _os_reason(err)) from err


def _os_reason(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "a symbolic link loop (it never reaches a file or folder)"
    return err.strerror or str(err)


def codec_reason(err: BaseException) -> str:
    """The first line of a codec error, without the C++ source location TorchCodec puts first
    ("decode_rows, /path/to/DecodeJpeg.cpp:287, ")."""
    text = re.sub(r"^\w+, \S+:\d+, ", "", str(err).strip())
    return text.splitlines()[0] if text else type(err).__name__


def read_bytes(path: StrPath, unreadable: Unreadable) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (read once, writable), or ``unreadable`` raised."""
    try:
        return torch.from_numpy(np.fromfile(os.fspath(path), dtype=np.uint8))
    except OSError as err:
        raise unreadable(os.fspath(path), err.strerror or str(err)) from err


@contextmanager
def _pil_limit(max_pixels: int) -> Iterator[None]:
    """PIL's guard set to ours while it reads a header: ``Image.open`` refuses above twice
    ``Image.MAX_IMAGE_PIXELS`` before the size can be seen, and allocates a WebP's canvas right
    after, so PIL's limit must follow ours both ways; its warning (at half) is ours to give.
    A module-level setting, restored at once, under a lock (threads would restore each other's)."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = (max_pixels + 1) // 2
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def read_header(
    data: torch.Tensor, path: StrPath, unreadable: Unreadable, max_pixels: int = MAX_IMAGE_PIXELS
) -> Header:
    """The image's format, mode and size from its header, or ``unreadable`` raised for a file
    that is no PNG, JPEG, WebP or GIF (by its content), holds more than ``max_pixels`` pixels,
    or is animated."""
    name = os.fspath(path)
    too_many = (
        f"is over the limit of {max_pixels:,} pixels (max_image_pixels), like a decompression bomb"
    )
    try:
        with (
            _pil_limit(max_pixels),
            Image.open(io.BytesIO(data.numpy()), formats=DECODED_FORMATS) as image,
        ):
            header = Header(image.format or "?", image.mode, *image.size)
            # is_animated reads up to the second frame's header; GIF's and WebP's only.
            animated = bool(getattr(image, "is_animated", False)) and header.format != "MPO"
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        pixels = f"{int(found.group(1)):,} pixels " if found else ""
        raise unreadable(name, f"{pixels}{too_many}") from err
    except UnidentifiedImageError as err:  # no decoder's signature: its text names a BytesIO
        raise unreadable(name, "not a readable PNG, JPEG, WebP or GIF image") from err
    except Exception as err:  # PIL raises many types for a bad header (OSError, SyntaxError, ...)
        raise unreadable(
            name, f"not a readable PNG, JPEG, WebP or GIF image ({codec_reason(err)})"
        ) from err
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise unreadable(name, f"{header.width}x{header.height} = {pixels:,} pixels {too_many}")
    if animated:
        raise unreadable(name, f"an animated {header.format}: only still images are read")
    return header


def decode(
    path: StrPath,
    mode: Mode,
    unreadable: Unreadable,
    data: torch.Tensor | None = None,
    max_pixels: int = MAX_IMAGE_PIXELS,
    keep_depth: bool = False,
) -> torch.Tensor:
    """The image as a (C, H, W) tensor in ``mode``, from ``data`` (the file's bytes, read when
    None), uint8 unless ``keep_depth`` (a 16-bit PNG then stays uint16), or ``unreadable``
    raised. The header is checked first (``read_header``)."""
    data = read_bytes(path, unreadable) if data is None else data
    read_header(data, path, unreadable, max_pixels)
    try:
        image = decode_image(data, mode=mode, output_dtype="auto" if keep_depth else torch.uint8)
    except (RuntimeError, ValueError) as err:
        raise unreadable(os.fspath(path), codec_reason(err)) from err
    if image.dim() != 3:  # frames the header did not announce
        raise unreadable(os.fspath(path), "an animated image: only still images are read")
    return image


def decode_jpegs(
    jpegs: Sequence[torch.Tensor], device: torch.device, mode: Mode = "RGB"
) -> list[torch.Tensor]:
    """JPEG bytes (CPU tensors) -> images on ``device``: on a GPU, the whole list in one nvJPEG
    call; on the CPU one by one. RuntimeError if any fails: decode each alone to find which."""
    return decode_jpeg(list(jpegs), mode=mode, device=device)


def write_png(image: torch.Tensor, path: StrPath, compression_level: int = 6) -> None:
    """A uint8 (1 or 3, H, W) image as a PNG file."""
    PngEncoder(image.cpu()).to_file(os.fspath(path), compression_level=compression_level)


def write_jpeg(image: torch.Tensor, path: StrPath, quality: int = 75) -> None:
    """A uint8 (1 or 3, H, W) image as a JPEG file."""
    JpegEncoder(image.cpu()).to_file(os.fspath(path), quality=quality)
