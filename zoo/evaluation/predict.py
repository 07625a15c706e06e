"""Image files -> the batch a model saw in training, and its top-k classes.

A file of any size is decoded to the training data's channels (grey for MNIST); the datamodule's
``preprocess_images`` then does what training did to a stored image (MNIST: resize to 28x28,
pad or resize to the model's input, normalise, with the very transform training used).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ConfigError
from zoo.data.images import MAX_IMAGE_PIXELS, MODES, decode, is_image_file


def find_images(targets: str | Sequence[str]) -> list[Path]:
    """The image files named, and those in (sub)folders named, in a stable order."""
    names = [targets] if isinstance(targets, str | Path) else list(targets)
    files: list[Path] = []
    for name in names:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_file(p))
            if not found:
                raise ConfigError(f"predict: no PNG, JPEG or WebP files in {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise ConfigError(f"predict: {path} does not exist")
    if not files:
        raise ConfigError("predict: no image files given")
    return files


def load_images(
    files: Sequence[Path], channels: int, max_pixels: int = MAX_IMAGE_PIXELS
) -> list[torch.Tensor]:
    """Each file as uint8 (channels, H, W), whatever its format's own channels; a file of more
    than ``max_pixels`` pixels is refused from its header, before it is decoded."""
    if channels not in MODES:
        raise ConfigError(f"predict: images with {channels} channels are not supported")

    def unreadable(path: str, reason: str) -> ConfigError:
        return ConfigError(f"predict: cannot read {path}: {reason}")

    return [decode(path, MODES[channels], unreadable, max_pixels=max_pixels) for path in files]


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
