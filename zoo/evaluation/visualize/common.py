"""What every visualisation shares: layers by their module names, the device, samples of a
split, pixel space, the gradient-ascent loop, and writing figures."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from pytorch_lightning.loggers import Logger
from torch import nn

from zoo.core.errors import ConfigError
from zoo.core.plots import log_figure
from zoo.core.schema import Schema, is_integer, option
from zoo.data.base import ZooDataModule
from zoo.evaluation.predict import find_images, preprocess_files


@dataclass
class Context:
    """What a method gets: the network on its device, the data, and where results go."""

    model: nn.Module  # the zoo network (module.model), eval mode, on ``device``
    task: str
    num_classes: int
    in_channels: int
    image_size: int
    datamodule: ZooDataModule
    split: str
    mean: torch.Tensor  # (1, C, 1, 1): normalised = (pixel - mean) / std
    std: torch.Tensor
    output_dir: Path
    loggers: Sequence[Logger]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.std + self.mean).clamp(0.0, 1.0)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised values of pixels 0 and 1: the data's range, per channel."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def save(self, name: str, figure: Figure) -> str:
        """``figure`` as <name>.png in the run directory and visualize/<name> in TensorBoard."""
        path = self.output_dir / f"{name}.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        log_figure(self.loggers, f"visualize/{name}", figure, step=0)
        return path.name


# What a ``layers`` setting holds: module names as ``python -m zoo.tools.summary`` prints them.
LAYER_NAMES = "a layer's name, a list of them, or null for every convolution"


def is_layer_names(value: Any) -> bool:
    """A layer's name, a list of names, or None (a name Hydra read as a number included)."""
    names = value if isinstance(value, list) else [value]
    return value is None or all(isinstance(n, str | int) and not isinstance(n, bool) for n in names)


# What an ``image`` setting holds.
IMAGE = "a sample index >= 0 or an image file"


def is_image(value: Any) -> bool:
    return isinstance(value, str) or (is_integer(value) and value >= 0)


def layers_of(model: nn.Module) -> dict[str, nn.Module]:
    """The model's modules by the names ``python -m zoo.tools.summary`` prints (no root)."""
    return {name: module for name, module in model.named_modules() if name}


def find_layer(model: nn.Module, name: Any, section: str) -> nn.Module:
    layers = layers_of(model)
    if name not in layers:
        raise ConfigError(
            f"visualization.{section}: {type(model).__name__} has no layer {name!r}; its layers: "
            f"{', '.join(layers)}"
        )
    return layers[name]


def convolutions(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in layers_of(model).items() if isinstance(m, nn.Conv2d)}


def chosen_layers(ctx: Context, names: Any, section: str) -> dict[str, nn.Module]:
    """The layers named (a name or a list), or every convolution when ``names`` is None."""
    if names is None:
        found: dict[str, nn.Module] = dict(convolutions(ctx.model))
        if not found:
            raise ConfigError(
                f"visualization.{section}: {type(ctx.model).__name__} has no convolutions; "
                f"name layers with visualization.{section}.layers=[...]"
            )
        return found
    names = names if isinstance(names, list) else [names]
    return {str(n): find_layer(ctx.model, str(n), section) for n in names}


def check_class(ctx: Context, index: Any, section: str) -> int:
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < ctx.num_classes:
        raise ConfigError(
            f"visualization.{section}: class {index!r} is out of range: the model has "
            f"{ctx.num_classes} classes (0 to {ctx.num_classes - 1})"
        )
    return index


class Recorder:
    """Keeps the outputs of some layers during a forward pass (forward hooks)."""

    def __init__(self, layers: Mapping[str, nn.Module]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = [
            layer.register_forward_hook(self._hook(name)) for name, layer in layers.items()
        ]

    def _hook(self, name: str) -> Callable[..., None]:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return keep

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


def split_samples(
    ctx: Context, count: int | None = None, indices: Sequence[int] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, targets) of the first ``count`` samples of the split (or those at ``indices``),
    normalised as the test loop sees them, on the model's device; targets are labels, or masks
    for segmentation."""
    dm = ctx.datamodule
    dm.setup("test" if ctx.split == "test" else "fit")
    loader = getattr(dm, f"{ctx.split}_dataloader")()
    wanted = None if indices is None else max(indices) + 1
    limit = wanted if wanted is not None else count
    images, labels, seen = [], [], 0
    for batch in loader:
        batch = dm.on_after_batch_transfer(
            tuple(t.to(ctx.device) for t in batch[:2]), dataloader_idx=0
        )
        images.append(batch[0])
        labels.append(batch[1])
        seen += len(batch[0])
        if limit is not None and seen >= limit:
            break
    x, y = torch.cat(images), torch.cat(labels)
    if indices is not None:
        if wanted > len(x):
            raise ConfigError(
                f"visualization: sample index {max(indices)} is out of range: the {ctx.split} "
                f"split has {len(x)} samples"
            )
        return x[list(indices)], y[list(indices)]
    return x[:limit], y[:limit]


def input_image(ctx: Context, image: Any, section: str) -> torch.Tensor:
    """(1, C, H, W), normalised: the image file named, or the split's sample at an index
    (``image`` as :func:`is_image` admits)."""
    if is_integer(image):
        return split_samples(ctx, indices=[image])[0]
    key = f"visualization.{section}.image"
    [first, *_] = find_images(image, key)  # of a folder, only the first image is decoded
    batch = preprocess_files([first], ctx.in_channels, ctx.datamodule.preprocess_images, key=key)
    return batch.to(ctx.device)


def random_start(ctx: Context, count: int, generator: torch.Generator) -> torch.Tensor:
    """x0 ~ N(0, 1) in the network's (normalised) input space, as in the lecture."""
    shape = (count, ctx.in_channels, ctx.image_size, ctx.image_size)
    return torch.randn(shape, generator=generator).to(ctx.device)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image: the squared-gradient penalty ||∇x||² of the regularised inverse problem."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).sum(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).sum(1)
    return dh + dw


# The most steps an ascent may take: each is a forward and a backward pass of the network, so
# 10,000 of them take minutes on a GPU for the largest zoo models, and far more on a CPU.
MAX_STEPS = 10_000
# The most samples of a split a method holds at once, on the network's device: 10,000 MNIST
# digits are 31 MB, 10,000 ImageNet-sized images (3 x 224 x 224, float32) 6 GB.
MAX_SAMPLES = 10_000
HELD_AT_ONCE = "the samples are held in memory at once"


@dataclass
class Ascent(Schema):
    """Gradient ascent on the input: x_i = x_{i-1} + lr ∇x [objective - l2 ||x||² - tv ||∇x||²],
    with optional jitter, the projection onto ||x|| = rho, and the clamp to the pixel range; the
    settings the methods that optimise an input share (their schemas' base).

    Written by hand: captum and torchvision have attribution, not input optimisation. The step is
    scaled by the gradient's RMS per image, so one lr suits every layer's scale.
    """

    # A count (an int: OmegaConf refuses 1.5); a negative one is refused in the words refusals
    # have always used.
    steps: int = option(
        200,
        ge=0,
        what="a number >= 0",
        at_most=MAX_STEPS,
        why="each is a forward and a backward pass",
    )
    lr: float = option(0.1, ge=0)
    l2: float = option(0.0, ge=0)
    tv: float = option(0.0, ge=0)
    jitter: int = option(0, ge=0)
    rho: float | None = option(None, gt=0, what="a number > 0, or null for no constraint")

    def run(
        self,
        ctx: Context,
        x: torch.Tensor,
        objective: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Maximise ``objective`` (one value per image) from ``x``; returns the final input."""
        low, high = (b.to(x.device) for b in ctx.bounds())
        x = self.project(x.detach().clone(), low, high)
        for _ in range(self.steps):
            x.requires_grad_(True)
            shifted = x
            if self.jitter:
                dy, dx = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=generator)
                shifted = torch.roll(x, (int(dy), int(dx)), dims=(2, 3))
            gain = objective(shifted)
            if self.l2:
                gain = gain - self.l2 * x.pow(2).flatten(1).sum(1)
            if self.tv:
                gain = gain - self.tv * total_variation(x)
            (grad,) = torch.autograd.grad(gain.sum(), x)
            rms = grad.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
            with torch.no_grad():
                x = self.project(x + self.lr * grad / rms, low, high)
        return x.detach()

    def project(self, x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        if self.rho is not None:
            norms = x.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x = x * (self.rho / norms)
        # The sphere, then the pixel range: after the clamp ||x|| <= rho.
        return torch.maximum(torch.minimum(x, high), low)


def fit_input(model: nn.Module, x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` resized to the side the model was trained at, when it differs."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
