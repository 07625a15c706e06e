"""ResNet-18, -34 and -50, from He, Zhang, Ren and Sun, "Deep Residual Learning for Image
Recognition" (CVPR 2016).

A 7x7 stem, four stages of residual blocks at widths 64, 128, 256 and 512 (each stage after the
first halves the resolution), global average pooling, and one fully connected layer. The depths
of Table 1 differ only in the block and in the number of blocks per stage, so they are one
class, ``ResNet(block, layers)``, registered under three names:

============  ============  ============  ===============================
name          block         layers        parameters (1000 classes)
============  ============  ============  ===============================
``resnet18``  BasicBlock    2, 2, 2, 2    11,689,512
``resnet34``  BasicBlock    3, 4, 6, 3    21,797,672
``resnet50``  Bottleneck    3, 4, 6, 3    25,557,032
============  ============  ============  ===============================

The bottleneck block is torchvision's "ResNet v1.5": it strides in its 3x3 convolution, where
the paper strides in the first 1x1 one, which skipped three quarters of the positions without
looking at them. The ``state_dict`` keys match ``torchvision.models.resnet18``, ``resnet34`` and
``resnet50``, so their weights load directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import register_model


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """The paper's option B: a strided 1x1 convolution with batch normalisation where the block
    changes resolution or width, otherwise the identity (``None``)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResidualBlock(nn.Module):
    """What ``ResNet`` asks of a block: ``block(in_channels, width, stride)`` maps ``in_channels``
    to ``width * expansion`` channels, with ``convolutions`` layers on its residual branch."""

    expansion: ClassVar[int]
    convolutions: ClassVar[int]

    def last_norm(self) -> nn.BatchNorm2d:
        """The batch norm that ends the residual branch (zeroed by ``zero_init_residual``)."""
        raise NotImplementedError


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions plus a shortcut: out = relu(F(x) + x). ResNet-18 and -34."""

    expansion = 1
    convolutions = 2

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        # Convolutions followed by batch normalisation need no bias.
        self.conv1 = nn.Conv2d(
            in_channels, width, kernel_size=3, stride=stride, padding=1, bias=False
        )
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = shortcut(in_channels, width, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(ResidualBlock):
    """A 1x1 convolution down to ``width`` channels, a 3x3 at that width, and a 1x1 back up to
    ``4 * width``, plus a shortcut. ResNet-50 and deeper: the 3x3 runs on a quarter of the
    channels, so a block costs about what a basic block at ``width`` does."""

    expansion = 4
    convolutions = 3

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        # v1.5: the stride is here, not in conv1 (see the module docstring).
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = shortcut(in_channels, out_channels, stride)

    def last_norm(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def make_stage(
    block: type[ResidualBlock], in_channels: int, width: int, blocks: int, stride: int
) -> nn.Sequential:
    """A stage of ``blocks`` blocks; only the first one changes stride and width."""
    out_channels = width * block.expansion
    layers = [block(in_channels, width, stride)]
    layers += [block(out_channels, width) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet(ZooModel):
    """A ResNet: ``block`` repeated ``layers[i]`` times in stage ``i + 1``.

    Args:
        block: ``BasicBlock`` or ``Bottleneck`` (fixed by the registry name).
        layers: Blocks in each of the four stages (fixed by the registry name).
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        small_input: For 28-64 px images (MNIST, CIFAR): replace the 7x7 stride-2 stem and
            its max pool, which would shrink a 32x32 image to 8x8 before the first block, by a
            3x3 stride-1 convolution. The keys stay the same (``maxpool`` becomes an identity),
            but the ``conv1`` weight has a different shape from torchvision's.
        zero_init_residual: Start each block's last batch norm at zero, so that every residual
            block begins as the identity (Goyal et al., 2017); off by default, as in torchvision.
    """

    head_names = ("fc",)
    first_conv = "conv1.weight"

    @classmethod
    def input_spec_for(cls, small_input: bool = False, **arguments: object) -> InputSpec:
        # Every downsampling layer is padded and rounds up, so even a 1x1 image stays 1x1.
        return InputSpec(native=32 if small_input else 224, minimum=1)

    def __init__(
        self,
        block: type[ResidualBlock],
        layers: Sequence[int],
        num_classes: int = 1000,
        in_channels: int = 3,
        small_input: bool = False,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__(in_channels, num_classes, self.input_spec_for(small_input=small_input))
        if not (isinstance(block, type) and issubclass(block, ResidualBlock)):
            raise ValueError(f"block must be BasicBlock or Bottleneck, got {block!r}")
        counts = tuple(layers)
        if len(counts) != 4 or not all(type(c) is int and c >= 1 for c in counts):
            raise ValueError(f"layers must be 4 integers >= 1 (blocks per stage), got {counts}")
        self.block = block
        self.layers = counts
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

        # The stem has already downsampled by 4, so the first stage keeps the resolution.
        e = block.expansion
        self.layer1 = make_stage(block, 64, 64, self.layers[0], stride=1)
        self.layer2 = make_stage(block, 64 * e, 128, self.layers[1], stride=2)
        self.layer3 = make_stage(block, 128 * e, 256, self.layers[2], stride=2)
        self.layer4 = make_stage(block, 256 * e, 512, self.layers[3], stride=2)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * e, num_classes)

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
                if isinstance(module, ResidualBlock):
                    nn.init.zeros_(module.last_norm().weight)

    @property
    def display_name(self) -> str:
        # Stem and classifier plus the weighted layers of every block: "ResNet-50".
        depth = 2 + self.block.convolutions * sum(self.layers)
        return f"ResNet-{depth}"

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


register_model("resnet18", ResNet, block=BasicBlock, layers=(2, 2, 2, 2))
register_model("resnet34", ResNet, block=BasicBlock, layers=(3, 4, 6, 3))
register_model("resnet50", ResNet, block=Bottleneck, layers=(3, 4, 6, 3))
