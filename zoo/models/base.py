"""What every zoo model promises: its task, its native input, the smallest input it accepts,
and clear ``ValueError``s instead of shape errors from deep inside a layer.

The input sizes are class-level data (an ``InputSpec``), so that configs and tools can read them
from the registry without building a network: ``zoo.models.input_spec("vgg16").native`` costs
nothing, where building VGG16 allocates 138 M parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn


def check_positive(name: str, value: int) -> None:
    """Reject a non-positive integer argument with a message that names it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class InputSpec:
    """The square image sides a network takes.

    Args:
        native: The side the paper trains on (224 for ImageNet models).
        minimum: The smallest side that still leaves every layer a non-empty map.
        multiple: H and W must be multiples of it (U-Net's four poolings need 16).
        exact: Only ``native`` is accepted (LeNet-5's fully connected C5 sees a fixed 5x5 map).
    """

    native: int
    minimum: int = 1
    multiple: int = 1
    exact: bool = False

    def __post_init__(self) -> None:
        for name in ("native", "minimum", "multiple"):
            check_positive(name, getattr(self, name))
        if self.native < self.minimum or self.native % self.multiple:
            raise ValueError(f"the native side {self.native} breaks its own spec {self}")

    @property
    def native_size(self) -> tuple[int, int]:
        """(H, W) of the native input."""
        return (self.native, self.native)

    def check(self, height: int, width: int | None = None, model: str = "the model") -> None:
        """Raise a ValueError if an image of this size can't pass through ``model``."""
        width = height if width is None else width
        if self.exact and (height, width) != self.native_size:
            raise ValueError(
                f"input size {height}x{width} does not suit {model}: "
                f"image_size must be exactly {self.native}"
            )
        if min(height, width) < self.minimum:
            raise ValueError(
                f"input size {height}x{width} is too small for {model}: "
                f"image_size must be >= {self.minimum} (native {self.native})"
            )
        if height % self.multiple or width % self.multiple:
            raise ValueError(
                f"input size {height}x{width} does not suit {model}: "
                f"image_size must be a multiple of {self.multiple}"
            )


class ZooModel(nn.Module):
    """Base class of the zoo's networks.

    Subclasses set ``task``, ``default_input_spec``, ``head_names`` and ``first_conv``; one
    whose input sizes depend on a constructor argument overrides the ``input_spec_for``
    classmethod and passes its result to ``ZooModel.__init__``. ``forward`` calls
    ``self.check_input(x)`` first thing.
    """

    task: ClassVar[str] = "classification"
    default_input_spec: ClassVar[InputSpec] = InputSpec(native=224)
    # For pretrained weights and fine-tuning (zoo.models.weights, zoo.tasks.finetune):
    # ``head_names``: the modules that map features to classes, re-initialised when
    # num_classes differs from the weights' and left trainable by ``freeze=backbone``;
    # ``first_conv``: the parameter that sees the input's channels (adapted for in_channels).
    head_names: ClassVar[tuple[str, ...]] = ()
    first_conv: ClassVar[str | None] = None

    @classmethod
    def input_spec_for(cls, **arguments: object) -> InputSpec:
        """The input spec of ``cls(**arguments)``, computed without building it.

        ``arguments`` are constructor arguments; those that don't affect the spec are ignored.
        """
        return cls.default_input_spec

    def __init__(
        self, in_channels: int, num_classes: int, input_spec: InputSpec | None = None
    ) -> None:
        super().__init__()
        check_positive("in_channels", in_channels)
        check_positive("num_classes", num_classes)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.input_spec = type(self).default_input_spec if input_spec is None else input_spec

    # The sizes read by the training, evaluation and tools code; derived from the spec so that
    # they can't disagree with what ``zoo.models.input_spec`` reports.
    @property
    def native_input_size(self) -> tuple[int, int]:
        """(H, W) as in the paper."""
        return self.input_spec.native_size

    @property
    def min_input_size(self) -> int:
        """The smallest square side the architecture accepts."""
        return self.input_spec.minimum

    @property
    def input_multiple(self) -> int:
        """Divisibility constraint on H and W."""
        return self.input_spec.multiple

    @property
    def display_name(self) -> str:
        """How error messages name the network (a family's class may say which variant)."""
        return type(self).__name__

    def check_input_size(self, height: int, width: int | None = None) -> None:
        """Raise a ValueError if an image of this size can't pass through the network."""
        self.input_spec.check(height, width, self.display_name)

    def check_input(self, x: torch.Tensor) -> None:
        """Validate a batch at forward time: 4-D, the right channel count, a large enough image."""
        # Skip under torch.compile / tracing: these are eager-mode user errors only.
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            return
        if x.dim() != 4:
            name = self.display_name
            raise ValueError(f"{name} expects a 4-D batch (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.display_name} was built with in_channels={self.in_channels}, "
                f"but the input has {x.shape[1]} channels (shape {tuple(x.shape)})"
            )
        self.check_input_size(int(x.shape[2]), int(x.shape[3]))
