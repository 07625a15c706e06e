"""``python evaluate.py ckpt_path=... visualize=[filters,class_models,...]``: the lecture's
"Visualizing CNNs" on any checkpoint evaluate.py loads.

Each method's settings are zoo/configs/visualization/<method>.yaml, under
``visualization.<method>``, checked by the method's schema (:func:`parse_visualization`). Every
method writes PNGs in the run directory, the same figures to TensorBoard (``visualize/<name>``),
and what it reached to metrics.json under its own name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.core.files import write_json
from zoo.core.schema import Schema
from zoo.core.signals import StopRequested
from zoo.data.base import ZooDataModule
from zoo.evaluation.attacks import pixel_normalization
from zoo.evaluation.checkpoint import Checkpoint
from zoo.evaluation.visualize.attribution import SaliencyConfig, saliency
from zoo.evaluation.visualize.common import Context
from zoo.evaluation.visualize.maps import FeatureMapsConfig, FiltersConfig, feature_maps, filters
from zoo.evaluation.visualize.optimize import (
    ActivationMaxConfig,
    ClassModelsConfig,
    DeepDreamConfig,
    activation_max,
    class_models,
    deep_dream,
)

ANY_TASK = ("classification", "segmentation")


class Method(NamedTuple):
    # Called with the method's settings as its schema parsed them.
    run: Callable[[Context, Any], dict[str, Any]]
    settings: type[Schema]
    tasks: tuple[str, ...]
    # One line for a reader of the report (report.html): what the method's figures show.
    shows: str


METHODS: dict[str, Method] = {
    "filters": Method(
        filters,
        FiltersConfig,
        ANY_TASK,
        "Each convolution's kernels drawn as small images: the pattern each filter responds to.",
    ),
    "feature_maps": Method(
        feature_maps,
        FeatureMapsConfig,
        ANY_TASK,
        "What the chosen layers output for one input: where each filter finds its pattern.",
    ),
    "activation_max": Method(
        activation_max,
        ActivationMaxConfig,
        ANY_TASK,
        "Inputs made by gradient ascent to excite a layer, a filter or a unit as much as "
        "possible: what it looks for.",
    ),
    "class_models": Method(
        class_models,
        ClassModelsConfig,
        ("classification",),
        "For each class, the input that maximises its score (Simonyan et al. 2013): what the "
        "network takes the class to look like.",
    ),
    "saliency": Method(
        saliency,
        SaliencyConfig,
        ("classification",),
        "Which pixels the predicted class's score depends on most: gradients and integrated "
        "gradients.",
    ),
    "deep_dream": Method(
        deep_dream,
        DeepDreamConfig,
        ANY_TASK,
        "An input changed, octave by octave, to amplify what a layer (or a class) sees in it.",
    ),
}


def parse_visualization(name: str, settings: Mapping[str, Any] | DictConfig | None) -> Schema:
    """Method ``name``'s settings (``visualization.<name>``, zoo/configs/visualization/<name>.yaml)
    as its schema: ConfigError naming the method or ``visualization.<name>.<key>`` otherwise.
    Which layers, classes and sample indices exist only the model and the data say, later."""
    if name not in METHODS:
        raise ConfigError(f"visualize: unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name].settings.parse(settings, f"visualization.{name}")


def requested_settings(cfg: DictConfig) -> dict[str, Schema]:
    """The methods in ``visualize`` (a name or a list; {} when null), each with its settings
    checked: a typo fails before the checkpoint is read and before any method has run."""
    names = to_plain(cfg.get("visualize"))
    if not names:
        return {}
    names = [names] if isinstance(names, str) else list(names)
    settings = cfg.get("visualization") or {}
    return {name: parse_visualization(name, settings.get(name)) for name in names}


def requested(cfg: DictConfig) -> list[str]:
    """The method names in ``visualize``, their settings checked; [] when null."""
    return list(requested_settings(cfg))


def device_for(cfg: DictConfig) -> torch.device:
    """The trainer config's device: a GPU for gpu/cuda/auto when there is one, else the CPU."""
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def visualize(
    cfg: DictConfig,
    checkpoint: Checkpoint,
    datamodule: ZooDataModule,
    report: dict[str, Any],
    output_dir: Path,
    loggers: Sequence[Logger],
) -> dict[str, Any]:
    """Run each method in ``cfg.visualize`` on the checkpoint's network; add what each reached
    to ``report`` under its name, write metrics.json, and return the report."""
    settings = requested_settings(cfg)
    model = checkpoint.model
    for name in settings:
        if model.task not in METHODS[name].tasks:
            raise ConfigError(
                f"visualize: {name} is for {' and '.join(METHODS[name].tasks)} models; this is "
                f"a {model.task} model"
            )
    network = model.to(device_for(cfg)).eval()
    # Gradients flow to the input only.
    for parameter in network.parameters():
        parameter.requires_grad_(False)
    mean, std = pixel_normalization(datamodule, model.in_channels)
    device = next(network.parameters()).device
    ctx = Context(
        model=network,
        task=model.task,
        num_classes=model.num_classes,
        in_channels=model.in_channels,
        image_size=int(report["image_size"]),
        datamodule=datamodule,
        split=str(cfg.get("split", "test")),
        mean=mean.to(device),
        std=std.to(device),
        output_dir=output_dir,
        loggers=loggers,
    )
    timings: dict[str, dict[str, float]] = {}
    try:
        for name, method_settings in settings.items():
            cpu, wall = time.process_time(), time.perf_counter()
            report[name] = METHODS[name].run(ctx, method_settings)
            timings[name] = {
                "cpu_s": round(time.process_time() - cpu, 2),
                "wall_s": round(time.perf_counter() - wall, 2),
            }
    except StopRequested as stop:
        # The methods that finished have written their figures: their results are kept too.
        report["stopped"] = f"{stop.reason} during {name}"
        _write_report(report, timings, output_dir, loggers)
        finished = ", ".join(timings) or "none"
        stop.saved = f"metrics.json holds the methods that finished ({finished})"
        raise
    _write_report(report, timings, output_dir, loggers)
    return report


def _write_report(
    report: dict[str, Any],
    timings: dict[str, dict[str, float]],
    output_dir: Path,
    loggers: Sequence[Logger],
) -> None:
    report["visualize_seconds"] = timings
    for logger in loggers:
        logger.save()
    write_json(output_dir / "metrics.json", report)
