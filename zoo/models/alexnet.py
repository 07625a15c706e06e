"""AlexNet, from Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks" (NeurIPS 2012).

Two variants:

* ``"original"``: the paper's five convolutions (96, 256, 384, 384, 256 filters) on 227x227
  inputs, as one tower: the paper split conv2, conv4 and conv5 across two GPUs, which only
  removed connections to save memory. 62,378,344 parameters for 1000 classes.
  ``lrn=True`` adds the paper's local response normalisation after the first two ReLUs.
* ``"torchvision"``: the "one weird trick" variant (Krizhevsky 2014) that torchvision ships,
  64-192-384-256-256 filters on 224x224 inputs, 61,100,840 parameters; its ``state_dict`` keys
  match ``torchvision.models.alexnet``, so its weights load directly.

Both end with an adaptive average pool to 6x6. It does nothing at the native input size (the
features are already 6x6) and lets other image sizes reach the fully connected layers.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import register_model

VARIANTS = ("original", "torchvision")

INPUT_SPECS = {
    # 227 = 4 * 54 + 11: the stride-4 11x11 filters tile the image exactly (55x55 maps); conv1
    # must leave 15x15 so that the three 3x3 stride-2 pools keep a pixel.
    "original": InputSpec(native=227, minimum=67),
    # conv1's padding of 2 lowers the minimum by 4.
    "torchvision": InputSpec(native=224, minimum=63),
}


def _local_response_norm() -> nn.LocalResponseNorm:
    # Section 3.3 of the paper: n=5, alpha=1e-4, beta=0.75, k=2.
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0)


def _conv_relu(in_channels: int, out_channels: int, lrn: bool, **conv: int) -> list[nn.Module]:
    """A convolution and its ReLU, then local response normalisation where ``lrn``."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, **conv), nn.ReLU(inplace=True)]
    return [*layers, _local_response_norm()] if lrn else layers


@register_model("alexnet")
class AlexNet(ZooModel):
    """AlexNet: five convolutions, three max pools, and three fully connected layers.

    Args:
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        variant: ``"original"`` (the paper, 227x227) or ``"torchvision"`` (224x224,
            weight-compatible with ``torchvision.models.alexnet``).
        lrn: Add local response normalisation after conv1 and conv2 (``"original"`` only).
        dropout: Dropout probability before the first two fully connected layers.
    """

    head_names = ("classifier.6",)
    first_conv = "features.0.weight"

    @classmethod
    def input_spec_for(cls, variant: str = "original", **arguments: object) -> InputSpec:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}; got {variant!r}")
        return INPUT_SPECS[variant]

    def __init__(
        self,
        num_classes: int = 1000,
        in_channels: int = 3,
        variant: str = "original",
        lrn: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes, self.input_spec_for(variant=variant))
        if lrn and variant != "original":
            raise ValueError("lrn=True is only available with variant='original'")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.variant = variant

        if variant == "original":
            widths = (96, 256, 384, 384, 256)
            conv1_padding = 0
        else:
            widths = (64, 192, 384, 256, 256)
            conv1_padding = 2

        # LRN follows the first two ReLUs only (Section 3.3).
        layers = [
            *_conv_relu(
                in_channels, widths[0], lrn, kernel_size=11, stride=4, padding=conv1_padding
            ),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_relu(widths[0], widths[1], lrn, kernel_size=5, padding=2),
            nn.MaxPool2d(kernel_size=3, stride=2),
            *_conv_relu(widths[1], widths[2], False, kernel_size=3, padding=1),
            *_conv_relu(widths[2], widths[3], False, kernel_size=3, padding=1),
            *_conv_relu(widths[3], widths[4], False, kernel_size=3, padding=1),
            nn.MaxPool2d(kernel_size=3, stride=2),
        ]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        # torchvision's layout (dropout before fc6 and fc7), kept for both variants so that
        # the classifier keys are the same.
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(widths[4] * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        # PyTorch's default initialisation, as in torchvision. The paper's N(0, 0.01) weights
        # and unit biases were tuned together with its learning-rate schedule.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)
