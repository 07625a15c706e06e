"""Random affine distortions of whole batches on the device, one draw per image.

LeCun et al. (1998) trained LeNet-5 on distorted copies of the digits (small rotations, scalings
and shifts), which took its test error from 0.95% to 0.8%. torchvision's v2.RandomAffine draws
one transform per call, i.e. per batch when given a batch; a draw per image needs
an affine grid per image + ``grid_sample``, written here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RandomDistortion(nn.Module):
    """Rotate by up to ``max_rotation`` degrees, scale by 1 +- ``max_scale`` and shift by up to
    ``max_shift`` pixels, independently per image. ``fill`` is the (normalised) background."""

    def __init__(
        self,
        max_rotation: float = 10.0,
        max_scale: float = 0.1,
        max_shift: float = 2.0,
        fill: float = 0.0,
    ) -> None:
        super().__init__()
        if max_rotation < 0 or not 0 <= max_scale < 1 or max_shift < 0:
            raise ValueError(
                "distortion needs max_rotation >= 0, 0 <= max_scale < 1 and max_shift >= 0, got "
                f"{max_rotation}, {max_scale}, {max_shift}"
            )
        self.max_rotation = math.radians(max_rotation)
        self.max_scale = max_scale
        self.max_shift = max_shift
        self.fill = fill

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        device = images.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, device=device) * 2 - 1

        angle = uniform(n) * self.max_rotation
        scale = 1 + uniform(n) * self.max_scale
        # affine_grid works in [-1, 1] coordinates: a pixel is 2 / size of them.
        shift = uniform(n, 2) * self.max_shift * 2 / torch.tensor([width, height], device=device)
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        grid = affine_grid(cos, sin, shift, height, width).to(images.dtype)
        # grid_sample pads with zeros: shift so that the background is what gets padded.
        moved = F.grid_sample(images - self.fill, grid, align_corners=False, padding_mode="zeros")
        return moved + self.fill


def affine_grid(
    cos: torch.Tensor, sin: torch.Tensor, shift: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """``F.affine_grid(theta, (n, c, height, width), align_corners=False)`` for the batch of
    ``theta = [[cos, -sin, shift_x], [sin, cos, shift_y]]`` (cos, sin: (n,); shift: (n, 2)),
    as a broadcast multiply-add. Written out because torch's is one batched matmul with an
    inner dimension of 3, which CPU BLAS does badly: 1.1 ms of a 1.3 ms call at 128 x 32 x 32,
    against about 0.1 ms here; tests/data hold it equal to torch's."""
    device = cos.device

    def centres(size: int) -> torch.Tensor:
        # Pixel centres in [-1, 1] coordinates, as align_corners=False places them.
        return (torch.arange(size, device=device, dtype=cos.dtype) * 2 + 1) / size - 1

    x = centres(width).view(1, 1, width)
    y = centres(height).view(1, height, 1)
    cos, sin = cos.view(-1, 1, 1), sin.view(-1, 1, 1)
    shift_x, shift_y = shift[:, 0].view(-1, 1, 1), shift[:, 1].view(-1, 1, 1)
    return torch.stack([cos * x - sin * y + shift_x, sin * x + cos * y + shift_y], dim=-1)
