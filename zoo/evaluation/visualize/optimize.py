"""Inputs made by gradient ascent: activation maximisation (a layer's norm, one filter, or one
unit), Simonyan et al.'s (2013) class models, and multi-octave deep dream."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.core.plots import labelled_grid
from zoo.core.schema import is_integer, option
from zoo.evaluation.checkpoint import load_checkpoint
from zoo.evaluation.visualize.common import (
    HELD_AT_ONCE,
    IMAGE,
    LAYER_NAMES,
    MAX_SAMPLES,
    Ascent,
    Context,
    Recorder,
    check_class,
    chosen_layers,
    convolutions,
    find_layer,
    fit_input,
    input_image,
    is_image,
    is_layer_names,
    random_start,
    split_samples,
)

TARGETS = ("unit", "filter", "layer")
# Images that go through the network as one batch, with their gradients: activation_max's
# starts, class_models' classes (one image each).
MAX_BATCH = 64
ONE_BATCH = "they go through the network as one batch"
# Deep dream's octaves: each runs the ascent's steps again, at a side scale times smaller (below
# 4 pixels, every further octave repeats the smallest); scale**octaves stays a finite float.
MAX_OCTAVES = 20
MAX_SCALE = 10.0


def _is_filters(value: Any) -> bool:
    if isinstance(value, list):
        return all(is_integer(unit) and unit >= 0 for unit in value)
    return is_integer(value) and value >= 1


def _is_pixel(value: Any) -> bool:
    return value is None or (len(value) == 2 and all(p >= 0 for p in value))


@dataclass
class ActivationMaxConfig(Ascent):
    """zoo/configs/visualization/activation_max.yaml."""

    layers: Any = option(None, valid=is_layer_names, what=LAYER_NAMES)
    target: str = option("unit", choices=TARGETS)
    filters: Any = option(
        4, valid=_is_filters, what="a count >= 1 (the first N filters) or a list of indices"
    )
    pixel: list[int] | None = option(
        None, valid=_is_pixel, what="[row, col], two integers >= 0, or null for the centre"
    )
    starts: int = option(9, ge=1, at_most=MAX_BATCH, why=ONE_BATCH)
    seed: int = 0
    data_samples: int = option(0, ge=0, at_most=MAX_SAMPLES, why=HELD_AT_ONCE)


@dataclass
class ClassModelsConfig(Ascent):
    """zoo/configs/visualization/class_models.yaml."""

    # null: every class (up to MAX_BATCH); the model says which indices exist.
    classes: list[int] | None = None
    seed: int = 0
    other_ckpts: list[str] = field(default_factory=list)

    def check(self, key: str) -> None:
        # Here rather than as the field's bounds, which would change its type's words.
        if self.classes is not None and not 1 <= len(self.classes) <= MAX_BATCH:
            given = f"{len(self.classes):,} of them" if self.classes else "[]"
            raise ConfigError(
                f"{key}.classes must hold 1 to {MAX_BATCH} class indices ({ONE_BATCH}), or be "
                f"null for every class, got {given}"
            )


@dataclass
class DeepDreamConfig(Ascent):
    """zoo/configs/visualization/deep_dream.yaml.

    Its key ``class`` is a Python keyword, which no field can be named: the field is ``class_``,
    and :meth:`parse` reads and refuses it under its config name."""

    image: Any = option(0, valid=is_image, what=IMAGE)
    # null: the last convolution.
    layer: str | None = None
    # A class's score instead of the layer's activation; the model says which indices exist.
    class_: int | None = None
    octaves: int = option(3, ge=1, at_most=MAX_OCTAVES)
    scale: float = option(1.4, ge=1, at_most=MAX_SCALE)
    seed: int = 0

    @classmethod
    def parse(cls, node: Mapping[str, Any] | DictConfig | None, key: str) -> DeepDreamConfig:
        values = to_plain(node) or {}
        if isinstance(values, Mapping):
            values = {("class_" if k == "class" else k): v for k, v in values.items()}
        try:
            return super().parse(values, key)
        except ConfigError as err:
            raise ConfigError(re.sub(r"\bclass_\b", "class", str(err))) from err


def _output_of(ctx: Context, name: str, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with Recorder({name: layer}) as recorder:
        ctx.model(x)
    return recorder.outputs[name]


def _objective(
    ctx: Context, name: str, layer: nn.Module, kind: str, unit: int, pixel: tuple[int, int]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """One value per image: the unit u_{k,i,j}, filter k's mean, or the layer's norm ||u||."""

    def value(x: torch.Tensor) -> torch.Tensor:
        out = _output_of(ctx, name, layer, x).float()
        if kind == "layer":
            return out.flatten(1).norm(dim=1)
        if out.dim() == 2:  # a fully connected layer: a unit is a neuron
            return out[:, unit]
        if kind == "filter":
            return out[:, unit].flatten(1).mean(1)
        return out[:, unit, pixel[0], pixel[1]]

    return value


def _units(section: str, spec: Any, count: int, name: str) -> list[int]:
    units = list(range(min(spec, count))) if is_integer(spec) else list(spec)
    for unit in units:
        if not 0 <= unit < count:
            raise ConfigError(
                f"visualization.{section}.filters: {unit!r} is out of range: {name} has {count}"
            )
    return units


def activation_max(ctx: Context, cfg: ActivationMaxConfig) -> dict[str, Any]:
    """For each target, ``starts`` inputs from N(0, 1) pushed up by gradient ascent; each
    reached value is reported beside the target's maximum over ``data_samples`` of the split."""
    kind, starts = cfg.target, cfg.starts
    layers = chosen_layers(ctx, cfg.layers, "activation_max")
    generator = torch.Generator().manual_seed(cfg.seed)
    data = split_samples(ctx, count=cfg.data_samples)[0] if cfg.data_samples else None
    probe = random_start(ctx, 1, generator)
    results: dict[str, Any] = {}
    for name, layer in layers.items():
        with torch.no_grad():
            shape = _output_of(ctx, name, layer, probe).shape[1:]
        pixel = cfg.pixel
        if len(shape) == 3:
            pixel = (shape[1] // 2, shape[2] // 2) if pixel is None else tuple(pixel)
            if len(pixel) != 2 or not all(
                0 <= p < s for p, s in zip(pixel, shape[1:], strict=True)
            ):
                raise ConfigError(
                    f"visualization.activation_max.pixel: {list(pixel)} is outside {name}'s "
                    f"{shape[1]}x{shape[2]} maps"
                )
        units = [0] if kind == "layer" else _units("activation_max", cfg.filters, shape[0], name)
        images, titles, reached = [], [], {}
        for unit in units:
            objective = _objective(ctx, name, layer, kind, unit, pixel or (0, 0))
            x = cfg.run(ctx, random_start(ctx, starts, generator), objective, generator)
            with torch.no_grad():
                values = objective(x).tolist()
                data_max = None
                if data is not None:
                    data_max = max(float(objective(chunk).max()) for chunk in data.split(500))
            key = "layer" if kind == "layer" else str(unit)
            reached[key] = {
                "reached": values,
                "min_reached": min(values),
                "data_max": data_max,
                "exceeds_data": None if data_max is None else min(values) > data_max,
            }
            images.append(ctx.to_pixels(x).cpu())
            titles += [f"{key}: {v:.2f}" for v in values]
        figure = labelled_grid(torch.cat(images), titles, columns=starts, rescale=False)
        where = f" at pixel {list(pixel)}" if kind == "unit" and pixel else ""
        figure.suptitle(f"{name}: maximised {kind}s{where}, {starts} starts each", fontsize=10)
        results[name] = {
            "target": kind,
            "pixel": list(pixel) if kind == "unit" and pixel else None,
            "units": reached,
            "png": ctx.save(f"activation_max_{name}", figure),
        }
    return results


def class_models(ctx: Context, cfg: ClassModelsConfig) -> dict[str, Any]:
    """Simonyan et al. (2013): argmax_x S_c(x) - l2 ||x||², S_c the class score before the
    softmax, from N(0, 1); each image's softmax probability for its class is reported, and for
    any ``other_ckpts`` whether those models see the same class."""
    classes = cfg.classes
    if classes is None:
        if ctx.num_classes > MAX_BATCH:
            raise ConfigError(
                f"visualization.class_models: the model has {ctx.num_classes} classes; choose "
                "a few with visualization.class_models.classes=[...]"
            )
        classes = list(range(ctx.num_classes))
    classes = [check_class(ctx, c, "class_models") for c in classes]
    # Before the ascent: a checkpoint that can't judge its images fails at once.
    other_models = {str(path): _other_classifier(ctx, path) for path in cfg.other_ckpts}
    generator = torch.Generator().manual_seed(cfg.seed)
    x = cfg.run(
        ctx,
        random_start(ctx, len(classes), generator),
        lambda batch: ctx.model(batch).float()[torch.arange(len(classes)), classes],
        generator,
    )
    with torch.no_grad():
        probs = F.softmax(ctx.model(x).float(), dim=1)
    own = probs[torch.arange(len(classes)), classes].tolist()
    preds = probs.argmax(1).tolist()
    results: dict[str, Any] = {
        str(c): {"prob": p, "pred": k} for c, p, k in zip(classes, own, preds, strict=True)
    }
    summary: dict[str, Any] = {"min_prob": min(own), "classes": results}
    others = {}
    for path, other in other_models.items():
        with torch.no_grad():
            theirs = F.softmax(other(x).float(), dim=1)
        same = (theirs.argmax(1) == torch.as_tensor(classes, device=ctx.device)).tolist()
        others[path] = {
            "same_class": int(sum(same)),
            "of": len(classes),
            "prob": theirs[torch.arange(len(classes)), classes].tolist(),
        }
    if others:
        summary["other_ckpts"] = others
    titles = [f"class {c}: p={p:.3f}" for c, p in zip(classes, own, strict=True)]
    figure = labelled_grid(ctx.to_pixels(x), titles, columns=min(10, len(classes)), rescale=False)
    figure.suptitle(f"class models (Simonyan et al. 2013), l2 = {cfg.l2:g}", fontsize=10)
    summary["png"] = ctx.save("class_models", figure)
    return summary


def _other_classifier(ctx: Context, path: str) -> nn.Module:
    """The network of ``path``, one of class_models' other_ckpts, on the device: a classifier of
    the same classes that takes the class images as they are; ConfigError naming it if not."""
    other = load_checkpoint(path).model
    where = f"visualization.class_models.other_ckpts: {path}"
    if other.task != "classification":
        raise ConfigError(f"{where} is a {other.task} model, not a classifier")
    if other.num_classes != ctx.num_classes:
        raise ConfigError(f"{where} predicts {other.num_classes} classes, not {ctx.num_classes}")
    if other.in_channels != ctx.in_channels:
        raise ConfigError(
            f"{where} takes {other.in_channels}-channel images, the class images have "
            f"{ctx.in_channels}"
        )
    if not _accepts(other, ctx.image_size):
        raise ConfigError(
            f"{where} does not take {ctx.image_size}x{ctx.image_size} images, the size of the "
            "class images"
        )
    return other.to(ctx.device).eval()


def _accepts(model: nn.Module, side: int) -> bool:
    try:
        model.check_input_size(side)
    except (ValueError, AttributeError):
        return False
    return True


def deep_dream(ctx: Context, cfg: DeepDreamConfig) -> dict[str, Any]:
    """Deep dream: gradient ascent of a layer's norm (or a class score) from an input image,
    octave by octave from coarse to fine, the detail each octave adds carried to the next.

    Written by hand (no library here does it). Models that take only their training size
    (LeNet-5) see each octave resized to it, inside the graph.
    """
    target = cfg.class_
    if target is not None:
        if ctx.task != "classification":
            raise ConfigError(
                "visualization.deep_dream.class is for classifiers (task classification); "
                f"this is a {ctx.task} model: dream a layer instead"
            )
        check_class(ctx, target, "deep_dream")
        label = f"class {target}"

        def objective(x: torch.Tensor) -> torch.Tensor:
            return ctx.model(fit(x)).float()[:, target]
    else:
        name = cfg.layer
        if name is None:
            convs = list(convolutions(ctx.model))
            if not convs:
                raise ConfigError("visualization.deep_dream: the model has no convolutions")
            name = convs[-1]
        layer = find_layer(ctx.model, name, "deep_dream")
        label = f"layer {name}"

        def objective(x: torch.Tensor) -> torch.Tensor:
            return _output_of(ctx, name, layer, fit(x)).float().flatten(1).pow(2).mean(1)

    def fit(x: torch.Tensor) -> torch.Tensor:
        if _accepts(ctx.model, x.shape[-1]):
            return x
        return fit_input(ctx.model, x, ctx.image_size)

    base = input_image(ctx, cfg.image, "deep_dream")
    side = base.shape[-1]
    sizes = [max(4, round(side / cfg.scale**k)) for k in reversed(range(cfg.octaves))]
    generator = torch.Generator().manual_seed(cfg.seed)  # the jitter's
    detail = torch.zeros_like(base)
    with torch.no_grad():
        start = float(objective(base)[0])
    for size in sizes:
        shrunk = F.interpolate(base, size=(size, size), mode="bilinear", align_corners=False)
        grown = F.interpolate(detail, size=(size, size), mode="bilinear", align_corners=False)
        dreamt = cfg.run(ctx, shrunk + grown, objective, generator)
        detail = dreamt - shrunk
    with torch.no_grad():
        end = float(objective(dreamt)[0])
    figure = labelled_grid(
        torch.cat([ctx.to_pixels(base), ctx.to_pixels(dreamt)]).cpu(),
        ["input", f"dream: {label}"],
        columns=2,
        rescale=False,
    )
    return {
        "target": label,
        "octaves": sizes,
        "start": start,
        "reached": end,
        "png": ctx.save("deep_dream", figure),
    }
