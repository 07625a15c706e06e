"""What needs no optimisation: the convolution kernels themselves, and the feature maps one
input produces (the lecture's layer-1 and layer-3 filters, and its feature-map figures)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import nn
from torchvision.utils import make_grid

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option
from zoo.evaluation.visualize.common import (
    IMAGE,
    LAYER_NAMES,
    Context,
    Recorder,
    chosen_layers,
    convolutions,
    input_image,
    is_image,
    is_layer_names,
)


@dataclass
class FiltersConfig(Schema):
    """zoo/configs/visualization/filters.yaml."""

    layers: Any = option(None, valid=is_layer_names, what=LAYER_NAMES)
    # Input channels drawn of a layer that doesn't read 3; null: the first max_channels.
    channels: list[int] | None = None
    max_channels: int = option(8, ge=1)
    max_filters: int = option(64, ge=1)


@dataclass
class FeatureMapsConfig(Schema):
    """zoo/configs/visualization/feature_maps.yaml."""

    layers: Any = option(None, valid=is_layer_names, what=LAYER_NAMES)
    image: Any = option(0, valid=is_image, what=IMAGE)
    max_maps: int = option(64, ge=1)


def _show(ax: Any, grid: torch.Tensor, title: str) -> None:
    ax.axis("off")
    image = grid.detach().float().cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=9)


def _scaled(kernels: torch.Tensor) -> torch.Tensor:
    """Each kernel min-max scaled on its own, so that small and large filters both read."""
    flat = kernels.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    shape = (-1,) + (1,) * (kernels.dim() - 1)
    return (kernels - low.view(shape)) / (high - low).clamp_min(1e-12).view(shape)


def filters(ctx: Context, cfg: FiltersConfig) -> dict[str, Any]:
    """Each convolution's kernels as a grid: in colour when the layer reads 3 channels (the
    lecture's AlexNet conv1), otherwise one grid per input channel (``channels``: a few)."""
    if not convolutions(ctx.model):
        raise ConfigError(
            f"visualization.filters: {type(ctx.model).__name__} has no convolutions to draw"
        )
    layers = chosen_layers(ctx, cfg.layers, "filters")
    results: dict[str, Any] = {}
    for name, layer in layers.items():
        if not isinstance(layer, nn.Conv2d):
            raise ConfigError(
                f"visualization.filters: {name!r} is a {type(layer).__name__}, not a convolution; "
                f"the convolutions: {', '.join(convolutions(ctx.model))}"
            )
        weight = layer.weight.detach().float().cpu()[: cfg.max_filters]
        out, inputs = weight.shape[:2]
        rows = max(1, int(out**0.5))
        columns = -(-out // rows)
        if inputs == 3:
            figure, ax = plt.subplots(figsize=(max(3, columns * 0.45), max(3, rows * 0.45)))
            grid = make_grid(_scaled(weight), nrow=columns, padding=1, pad_value=1.0)
            _show(ax, grid, f"{name}: {out} filters, {tuple(weight.shape[2:])}, RGB")
        else:
            shown = list(range(inputs)) if cfg.channels is None else list(cfg.channels)
            for c in shown:
                if not 0 <= c < inputs:
                    raise ConfigError(
                        f"visualization.filters.channels: {c!r} is out of range: {name} reads "
                        f"{inputs} channels"
                    )
            shown = shown[: cfg.max_channels]
            figure, axes = plt.subplots(
                1, len(shown), figsize=(2.6 * len(shown), 2.8), squeeze=False
            )
            for ax, c in zip(axes[0], shown, strict=True):
                grid = make_grid(
                    _scaled(weight[:, c : c + 1]), nrow=columns, padding=1, pad_value=1
                )
                _show(ax, grid, f"input channel {c}")
            figure.suptitle(f"{name}: {out} filters {tuple(weight.shape[2:])}", fontsize=10)
        figure.tight_layout()
        results[name] = {
            "shape": list(layer.weight.shape),
            "png": ctx.save(f"filters_{name}", figure),
        }
    return results


def feature_maps(ctx: Context, cfg: FeatureMapsConfig) -> dict[str, Any]:
    """The maps the chosen layers produce for one input (a file, or a sample of the split)."""
    layers = chosen_layers(ctx, cfg.layers, "feature_maps")
    x = input_image(ctx, cfg.image, "feature_maps")
    with Recorder(layers) as recorder, torch.no_grad():
        ctx.model(x)
    results: dict[str, Any] = {}
    for name in layers:
        output = recorder.outputs.get(name)
        if output is None or output.dim() != 4:
            shape = None if output is None else list(output.shape)
            raise ConfigError(
                f"visualization.feature_maps: {name!r} gives no 2-D maps (output {shape}); "
                "choose a convolutional layer"
            )
        maps = output[0, : cfg.max_maps].detach().float().cpu().unsqueeze(1)
        columns = max(1, int(len(maps) ** 0.5 + 0.999))
        figure, (left, right) = plt.subplots(
            1, 2, figsize=(8, 4), gridspec_kw={"width_ratios": [1, 2]}
        )
        _show(left, ctx.to_pixels(x)[0], "input")
        _show(right, make_grid(_scaled(maps), nrow=columns, padding=1, pad_value=1), name)
        figure.suptitle(f"{name}: {output.shape[1]} maps of {tuple(output.shape[2:])}")
        figure.tight_layout()
        results[name] = {
            "shape": list(output.shape[1:]),
            "mean": float(output.float().mean()),
            "max": float(output.float().max()),
            "png": ctx.save(f"feature_maps_{name}", figure),
        }
    return results
