"""ResNet-18, from He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition"
(CVPR 2016): a 7x7 stem, four stages of two basic residual blocks, global average pooling, and
one fully connected layer; 11,689,512 parameters for 1000 classes.

The ``state_dict`` keys match ``torchvision.models.resnet18``, so its weights load directly.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models import register_model
from zoo.models.base import ZooModel


class BasicBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut: out = relu(F(x) + x).

    When the block changes resolution or width, the shortcut is a strided 1x1 convolution with
    batch normalisation (the paper's option B); otherwise it is the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        # Convolutions followed by batch normalisation need no bias.
        self.conv1 = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def make_stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """A stage of ``blocks`` basic blocks; only the first one changes stride and width."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


@register_model("resnet18")
class ResNet18(ZooModel):
    """ResNet-18.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        small_input: For 28-64 px images (MNIST, CIFAR): replace the 7x7 stride-2 stem and
            its max pool, which would shrink a 32x32 image to 8x8 before the first block, by a
            3x3 stride-1 convolution. The keys stay the same (``maxpool`` becomes an identity),
            but the ``conv1`` weight has a different shape from torchvision's.
        zero_init_residual: Start each block's last batch norm at zero, so that every residual
            block begins as the identity (Goyal et al., 2017); off by default, as in torchvision.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.native_input_size = (32, 32) if small_input else (224, 224)
        # Every downsampling layer is padded and rounds up, so even a 1x1 image stays 1x1.
        self.min_input_size = 1
        self.small_input = small_input

        if small_input:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )

        self.layer1 = make_stage(64, 64, blocks=2, stride=1)
        self.layer2 = make_stage(64, 128, blocks=2, stride=2)
        self.layer3 = make_stage(128, 256, blocks=2, stride=2)
        self.layer4 = make_stage(256, 512, blocks=2, stride=2)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

        # torchvision's initialisation: He normal (fan-out) for convolutions, BN as identity,
        # PyTorch's default for the fully connected layer.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)
