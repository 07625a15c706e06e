"""U-Net, from Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation" (MICCAI 2015).

A contracting path of four 2x2 max pools and an expanding path of four 2x upsamplings, joined by
skip connections that concatenate encoder features onto the decoder's. Widths double at every
level, 64 to 1024 with the default ``base_width``.

Two departures from the paper, both common practice: the 3x3 convolutions are zero-padded
("same"), so the output mask has the input's height and width and no cropping of the skip
connections is needed (the paper's unpadded convolutions map a 572x572 tile to a 388x388 mask);
and each convolution is followed by batch normalisation, which the paper predates.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.base import InputSpec, ZooModel, check_positive
from zoo.models.registry import register_model


class DoubleConv(nn.Sequential):
    """Two (3x3 convolution, batch norm, ReLU) layers: the unit at every level of the U."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """One step down the contracting path: halve the resolution, then a double convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.MaxPool2d(kernel_size=2, stride=2), DoubleConv(in_channels, out_channels)
        )


class Up(nn.Module):
    """One step up the expanding path: double the resolution and halve the channels, concatenate
    the skip connection, then a double convolution.

    The paper's "up-convolution" is a learned 2x2 stride-2 transposed convolution. With
    ``bilinear=True``, a fixed bilinear upsampling followed by a 1x1 convolution does the same
    job with a quarter of the parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool) -> None:
        super().__init__()
        half = in_channels // 2
        self.up: nn.Module
        if bilinear:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, half, kernel_size=1),
            )
        else:
            self.up = nn.ConvTranspose2d(in_channels, half, kernel_size=2, stride=2)
        # The skip connection brings the other half back.
        self.conv = DoubleConv(2 * half, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        return self.conv(torch.cat([skip, x], dim=1))


@register_model("unet")
class UNet(ZooModel):
    """U-Net for semantic segmentation: ``(N, in_channels, H, W)`` images to
    ``(N, num_classes, H, W)`` per-pixel logits.

    Args:
        num_classes: Number of segmentation classes (2 in the paper: cell and background).
        in_channels: Channels of the input image.
        base_width: Channels at the top level; the bottom level has 16 times as many.
        bilinear: Upsample bilinearly (then a 1x1 convolution) instead of with transposed
            convolutions.

    H and W must be multiples of 16 so that the four poolings divide evenly and the upsampled
    maps line up with their skip connections.
    """

    task = "segmentation"
    # The paper tiles 572x572 inputs with unpadded convolutions; with padding, its 512x512 ISBI
    # frames are the natural size.
    default_input_spec = InputSpec(native=512, minimum=16, multiple=16)
    head_names = ("head",)
    first_conv = "stem.0.weight"

    def __init__(
        self,
        num_classes: int = 2,
        in_channels: int = 3,
        base_width: int = 64,
        bilinear: bool = False,
    ) -> None:
        super().__init__(in_channels, num_classes)
        check_positive("base_width", base_width)
        self.bilinear = bilinear

        w = base_width
        self.stem = DoubleConv(in_channels, w)
        self.down1 = Down(w, 2 * w)
        self.down2 = Down(2 * w, 4 * w)
        self.down3 = Down(4 * w, 8 * w)
        self.down4 = Down(8 * w, 16 * w)
        self.up1 = Up(16 * w, 8 * w, bilinear)
        self.up2 = Up(8 * w, 4 * w, bilinear)
        self.up3 = Up(4 * w, 2 * w, bilinear)
        self.up4 = Up(2 * w, w, bilinear)
        self.head = nn.Conv2d(w, num_classes, kernel_size=1)

        # The paper draws weights from N(0, sqrt(2 / fan_in)), He et al.'s initialisation.
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x1 = self.stem(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        x5 = self.down4(x4)
        x = self.up1(x5, x4)
        x = self.up2(x, x3)
        x = self.up3(x, x2)
        x = self.up4(x, x1)
        return self.head(x)
