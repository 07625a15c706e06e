"""Image files -> the batch a model saw in training, and its top-k classes.

A file of any size is decoded to the training data's channels (grey for MNIST); the datamodule's
``preprocess_images`` then does what training did to a stored image (MNIST: resize to 28x28,
pad or resize to the model's input, normalise, with the very transform training used). Files
are decoded, preprocessed and dropped one at a time: a folder of large images needs the memory
of one of them, not of all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ConfigError
from zoo.data.images import MAX_IMAGE_PIXELS, MODES, decode, list_folder

Preprocess = Callable[[Sequence[torch.Tensor]], torch.Tensor]


def find_images(targets: str | Sequence[str], key: str = "predict") -> list[Path]:
    """The image files named, and those in (sub)folders named, in a stable order; errors name
    ``key``, the setting that named them."""

    def unreadable(path: str, reason: str) -> ConfigError:
        return ConfigError(f"{key}: cannot read {path}: {reason}")

    names = [targets] if isinstance(targets, str | Path) else list(targets)
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = list_folder(path, unreadable, recursive=True).images
            if not found:
                raise ConfigError(f"{key}: no PNG, JPEG or WebP files in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"{key}: {path} does not exist")
    if not files:
        raise ConfigError(f"{key}: no image files given")
    return files


def preprocess_files(
    files: Sequence[Path],
    channels: int,
    preprocess: Preprocess,
    max_pixels: int = MAX_IMAGE_PIXELS,
    key: str = "predict",
) -> torch.Tensor:
    """The batch of ``files``: each decoded as uint8 (channels, H, W), whatever its format's own
    channels, through ``preprocess`` (a datamodule's ``preprocess_images``), and dropped before
    the next is decoded. A file of more than ``max_pixels`` pixels is refused from its header,
    before it is decoded; errors name ``key``."""
    if channels not in MODES:
        raise ConfigError(f"{key}: images with {channels} channels are not supported")

    def unreadable(path: str, reason: str) -> ConfigError:
        return ConfigError(f"{key}: cannot read {path}: {reason}")

    batches = []
    for path in files:
        image = decode(path, MODES[channels], unreadable, max_pixels=max_pixels)
        batches.append(preprocess([image]))
        del image  # before the next file is decoded, not after
    return torch.cat(batches)


def top_k(
    files: Sequence[Path], probabilities: torch.Tensor, k: int, class_names: Sequence[str]
) -> list[dict[str, Any]]:
    """One entry per file: its k most probable classes, most probable first."""
    values, indices = probabilities.float().topk(min(k, probabilities.shape[1]), dim=1)
    return [
        {
            "file": str(path),
            "top_k": [
                {"class": class_names[i], "index": i, "probability": p}
                for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)
            ],
        }
        for path, row_p, row_i in zip(files, values, indices, strict=True)
    ]
