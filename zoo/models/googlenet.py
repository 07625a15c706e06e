"""GoogLeNet (Inception v1), from Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015).

The layers, names and ``state_dict`` keys follow ``torchvision.models.googlenet``, so its
weights load directly. Like torchvision's port of the original weights, it differs from the
paper in two ways: every convolution is followed by batch normalisation, and the "5x5" branch of
each Inception module uses a 3x3 convolution (https://github.com/pytorch/vision/issues/906).
With the two auxiliary classifiers the model has 13,004,888 parameters for 1000 classes,
6,624,904 without them.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import register_model

# The normalisation torchvision's GoogLeNet weights expect their inputs to have had.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode with ``aux_logits=True`` (torchvision's order)."""

    logits: torch.Tensor
    aux_logits2: torch.Tensor
    aux_logits1: torch.Tensor


class BasicConv2d(nn.Module):
    """Convolution, batch normalisation, ReLU. The convolution has no bias: the BN adds one."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        # eps=1e-3 as in the TensorFlow model the original weights were ported from.
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches concatenated along channels: 1x1; 1x1 then 3x3; 1x1 then "5x5"
    (3x3, see the module docstring); 3x3 max pool then 1x1. The 1x1 reductions keep the
    expensive convolutions cheap."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)


class InceptionAux(nn.Module):
    """An auxiliary classifier on an intermediate feature map. It adds gradient to the lower
    layers during training and is ignored at inference."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(128 * 4 * 4, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The paper's 5x5 stride-3 average pool maps 14x14 to 4x4; adaptive pooling does the
        # same at 224 and also fits other input sizes.
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = self.dropout(x)
        return self.fc2(x)


@register_model("googlenet")
class GoogLeNet(ZooModel):
    """GoogLeNet: a convolutional stem, nine Inception modules, global average pooling, and
    one fully connected layer.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        aux_logits: Build the two auxiliary classifiers (after inception4a and inception4d).
            In training mode ``forward`` then returns ``GoogLeNetOutputs(logits, aux_logits2,
            aux_logits1)``; the paper weights each auxiliary loss by 0.3. In eval mode, or with
            ``aux_logits=False``, it returns the logits tensor alone.
        dropout: Dropout probability before the final fully connected layer.
        aux_dropout: Dropout probability inside the auxiliary classifiers.
        transform_input: Map inputs normalised with ImageNet's mean and std to the
            ``(x - 0.5) / 0.5`` scaling of the TensorFlow model torchvision's weights were
            ported from, as ``torchvision.models.googlenet`` does. ``None`` means false, except
            in ``zoo.models.build(..., weights=...)`` with torchvision's weights, where it means
            true, as in torchvision. A 1-channel model uses the mean of the three channels'
            constants (a grey image is what an RGB model sees as three equal channels).
    """

    # A 3x3 pool needs at least 2x2 even in ceil mode: 15x15 reaches maxpool3 as 2x2, 14x14 as
    # 1x1.
    default_input_spec = InputSpec(native=224, minimum=15)
    # The auxiliary classifiers are heads too: torchvision's file holds untrained ones.
    head_names = ("fc", "aux1", "aux2")
    first_conv = "conv1.conv.weight"

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        aux_logits: bool = True,
        dropout: float = 0.2,
        aux_dropout: float = 0.7,
        transform_input: bool | None = None,
    ) -> None:
        super().__init__(in_channels, num_classes)
        self.transform_input = bool(transform_input)
        if self.transform_input and in_channels not in (1, 3):
            raise ValueError(
                f"transform_input needs in_channels 1 or 3 (ImageNet's RGB), got {in_channels}"
            )
        # torchvision's constants: x * (std / 0.5) + (mean - 0.5) / 0.5, channel by channel.
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if in_channels == 1:
            mean, std = (sum(mean) / 3,), (sum(std) / 3,)
        self._input_scale = tuple(s / 0.5 for s in std)
        self._input_shift = tuple((m - 0.5) / 0.5 for m in mean)
        for name, p in (("dropout", dropout), ("aux_dropout", aux_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
        self.aux_logits = aux_logits

        self.conv1 = BasicConv2d(in_channels, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        # Table 1: in, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj.
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        # Without the heads the attributes are None, so the keys match torchvision's
        # aux_logits=False model.
        self.aux1: InceptionAux | None = None
        self.aux2: InceptionAux | None = None
        if aux_logits:
            self.aux1 = InceptionAux(512, num_classes, dropout=aux_dropout)
            self.aux2 = InceptionAux(528, num_classes, dropout=aux_dropout)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        # torchvision's initialisation (a truncated normal, std 0.01).
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def _transform_input(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, len(self._input_scale), 1, 1)
        scale = torch.tensor(self._input_scale, dtype=x.dtype, device=x.device).view(shape)
        shift = torch.tensor(self._input_shift, dtype=x.dtype, device=x.device).view(shape)
        return x * scale + shift

    def forward(self, x: torch.Tensor) -> torch.Tensor | GoogLeNetOutputs:
        self.check_input(x)
        if self.transform_input:
            x = self._transform_input(x)
        x = self.conv1(x)
        x = self.maxpool1(x)
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.maxpool2(x)

        x = self.inception3a(x)
        x = self.inception3b(x)
        x = self.maxpool3(x)

        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4b(x)
        x = self.inception4c(x)
        x = self.inception4d(x)
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.inception4e(x)
        x = self.maxpool4(x)

        x = self.inception5a(x)
        x = self.inception5b(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(x)
        logits = self.fc(x)

        if aux1 is not None and aux2 is not None:
            return GoogLeNetOutputs(logits, aux2, aux1)
        return logits
