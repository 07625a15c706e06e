"""VGG16, from Simonyan and Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
Recognition" (ICLR 2015): configuration D, thirteen 3x3 convolutions and three fully connected
layers, 138,357,544 parameters for 1000 classes.

The ``state_dict`` keys match ``torchvision.models.vgg16`` (``vgg16_bn`` with
``batch_norm=True``), so torchvision's weights load directly.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import ZooModel

# Configuration D of Table 1: output channels of each 3x3 convolution, "M" for a 2x2 max pool.
CONFIG_D: list[int | str] = [
    64, 64, "M",
    128, 128, "M",
    256, 256, 256, "M",
    512, 512, 512, "M",
    512, 512, 512, "M",
]  # fmt: skip


def make_features(config: list[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    """The convolutional trunk: same-padded 3x3 convolutions, each followed by a ReLU."""
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if isinstance(item, str):  # "M"
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    return nn.Sequential(*layers)


@register_model("vgg16")
class VGG16(ZooModel):
    """VGG16 (configuration D).

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        batch_norm: Add batch normalisation after every convolution (torchvision's
            ``vgg16_bn``; not in the paper, which predates it).
        dropout: Dropout probability after the first two fully connected layers.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes)
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.native_input_size = (224, 224)
        # Five 2x2 pools halve the image five times: 32 is the smallest that keeps one pixel.
        self.min_input_size = 32
        self.batch_norm = batch_norm

        self.features = make_features(CONFIG_D, in_channels, batch_norm)
        # At 224 the features are already 7x7; the adaptive pool lets other sizes reach fc6.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

        # torchvision's initialisation. He et al.'s fan-out normal replaces the paper's scheme
        # of training configuration A first and copying its layers into the deeper nets.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
