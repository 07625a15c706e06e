"""VGG-11, -13, -16 and -19, from Simonyan and Zisserman, "Very Deep Convolutional Networks for
Large-Scale Image Recognition" (ICLR 2015).

Stacks of same-padded 3x3 convolutions separated by five 2x2 max pools, then three fully
connected layers. The depths are the paper's configurations of Table 1, written below as data
and registered as one class, ``VGG(cfg)``:

=========  ======  =====================  ======================================
name       config  weight layers          parameters (1000 classes)
=========  ======  =====================  ======================================
``vgg11``  A       8 conv + 3 fc          132,863,336 (132,868,840 batch norm)
``vgg13``  B       10 conv + 3 fc         133,047,848 (133,053,736 batch norm)
``vgg16``  D       13 conv + 3 fc         138,357,544 (138,365,992 batch norm)
``vgg19``  E       16 conv + 3 fc         143,667,240 (143,678,248 batch norm)
=========  ======  =====================  ======================================

Configuration C (VGG16 with three 1x1 convolutions) and A-LRN are left out, as in torchvision:
the paper found both no better than their neighbours. The ``state_dict`` keys match
``torchvision.models.vgg11`` ... ``vgg19``; ``vgg11_bn`` ... ``vgg19_bn`` (registered under
torchvision's names, or ``batch_norm=True``) match its batch-normalised forms, so torchvision's
weights load directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import register_model

# Table 1: output channels of each 3x3 convolution, "M" for a 2x2 max pool.
CONFIGS: dict[str, list[int | str]] = {
    "A": [
        64, "M",
        128, "M",
        256, 256, "M",
        512, 512, "M",
        512, 512, "M",
    ],
    "B": [
        64, 64, "M",
        128, 128, "M",
        256, 256, "M",
        512, 512, "M",
        512, 512, "M",
    ],
    "D": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, "M",
        512, 512, 512, "M",
        512, 512, 512, "M",
    ],
    "E": [
        64, 64, "M",
        128, 128, "M",
        256, 256, 256, 256, "M",
        512, 512, 512, 512, "M",
        512, 512, 512, 512, "M",
    ],
}  # fmt: skip

Config = str | Sequence[int | str]


def resolve_config(cfg: Config) -> list[int | str]:
    """The layer list that ``cfg`` names ("A", "B", "D", "E"), or ``cfg`` itself, checked."""
    if isinstance(cfg, str):
        if cfg not in CONFIGS:
            raise ValueError(f"cfg must be one of {', '.join(CONFIGS)} or a list; got {cfg!r}")
        return CONFIGS[cfg]
    layers = list(cfg)
    convs = [item for item in layers if item != "M"]
    if not convs or not all(type(item) is int and item >= 1 for item in convs):
        raise ValueError(f"cfg must list channel counts >= 1 and 'M' for max pools, got {layers}")
    return layers


def make_features(config: Sequence[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
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


class VGG(ZooModel):
    """A VGG network of configuration ``cfg``.

    Args:
        cfg: "A", "B", "D" or "E" (fixed by the registry name), or a custom list of channel
            counts and "M"s.
        num_classes: Number of output classes.
        in_channels: Channels of the input image.
        batch_norm: Add batch normalisation after every convolution (torchvision's
            ``vgg16_bn`` and its siblings; not in the paper, which predates it).
        dropout: Dropout probability after the first two fully connected layers.
    """

    # Five 2x2 pools halve the image five times: 32 is the smallest side that keeps one pixel.
    default_input_spec = InputSpec(native=224, minimum=32)
    head_names = ("classifier.6",)
    first_conv = "features.0.weight"

    @classmethod
    def input_spec_for(cls, cfg: Config | None = None, **arguments: object) -> InputSpec:
        if cfg is None:  # every configuration of the paper has five pools
            return cls.default_input_spec
        pools = resolve_config(cfg).count("M")
        return InputSpec(native=224, minimum=2**pools)

    def __init__(
        self,
        cfg: Config,
        num_classes: int = 1000,
        in_channels: int = 3,
        batch_norm: bool = False,
        dropout: float = 0.5,
    ) -> None:
        super().__init__(in_channels, num_classes, self.input_spec_for(cfg=cfg))
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout!r}")
        self.cfg = cfg if isinstance(cfg, str) else tuple(cfg)
        self.batch_norm = batch_norm
        config = resolve_config(cfg)

        self.features = make_features(config, in_channels, batch_norm)
        # At 224 the features are already 7x7; the adaptive pool lets other sizes reach fc6.
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        width = [item for item in config if isinstance(item, int)][-1]
        self.classifier = nn.Sequential(
            nn.Linear(width * 7 * 7, 4096),
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

    @property
    def display_name(self) -> str:
        # Weighted layers, the paper's naming: "VGG-16".
        convs = sum(isinstance(m, nn.Conv2d) for m in self.features)
        return f"VGG-{convs + 3}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


register_model("vgg11", VGG, cfg="A")
register_model("vgg13", VGG, cfg="B")
register_model("vgg16", VGG, cfg="D")
register_model("vgg19", VGG, cfg="E")
# torchvision's names for the batch-normalised forms, whose weights it publishes apart.
register_model("vgg11_bn", VGG, cfg="A", batch_norm=True)
register_model("vgg13_bn", VGG, cfg="B", batch_norm=True)
register_model("vgg16_bn", VGG, cfg="D", batch_norm=True)
register_model("vgg19_bn", VGG, cfg="E", batch_norm=True)
