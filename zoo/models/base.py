"""What every zoo model promises: its task, its native input, the smallest input it accepts,
and clear ``ValueError``s instead of shape errors from deep inside a layer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


def check_positive(name: str, value: int) -> None:
    """Reject a non-positive integer argument with a message that names it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class ZooModel(nn.Module):
    """Base class of the zoo's networks.

    Subclasses set ``task`` and, per instance, ``native_input_size`` (H, W as in the paper) and
    ``min_input_size`` (the smallest square side the architecture accepts), then call
    ``self.check_input(x)`` first thing in ``forward``.
    """

    task: ClassVar[str] = "classification"

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("num_classes", num_classes)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.native_input_size: tuple[int, int] = (224, 224)
        self.min_input_size: int = 1
        # Divisibility constraint on H and W (U-Net's four poolings need multiples of 16).
        self.input_multiple: int = 1

    def check_input_size(self, height: int, width: int | None = None) -> None:
        """Raise a ValueError if an image of this size can't pass through the network."""
        width = height if width is None else width
        name = type(self).__name__
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"input size {height}x{width} is too small for {name}: "
                f"image_size must be >= {self.min_input_size} (native {self.native_input_size[0]})"
            )
        if height % self.input_multiple or width % self.input_multiple:
            raise ValueError(
                f"input size {height}x{width} does not suit {name}: "
                f"image_size must be a multiple of {self.input_multiple}"
            )

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch at forward time: 4-D, the right channel count, a large enough image."""
        # Skip under torch.compile / tracing: these are eager-mode user errors only.
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return
        if x.dim() != 4:
            name = type(self).__name__
            raise ValueError(f"{name} expects a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built with in_channels={self.in_channels}, "
                f"but the input has {x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        self.check_input_size(int(x.shape[2]), int(x.shape[3]))
