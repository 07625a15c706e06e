"""``python evaluate.py ckpt_path=... visualize=[filters,class_models,...]``: the lecture's
"Visualizing CNNs" on any checkpoint evaluate.py loads.

Each method's settings are configs/visualization/<method>.yaml, under
``visualization.<method>``. Every method writes PNGs in the run directory, the same figures to
TensorBoard (``visualize/<name>``), and what it reached to metrics.json under its own name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from omegaconf import DictConfig
from pytorch_lightning.loggers import Logger

from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.evaluation.attacks import pixel_normalization
from zoo.evaluation.checkpoint import Checkpoint
from zoo.evaluation.visualize.attribution import saliency
from zoo.evaluation.visualize.common import Context, check_number
from zoo.evaluation.visualize.maps import feature_maps, filters
from zoo.evaluation.visualize.optimize import activation_max, class_models, deep_dream

ANY_TASK = ("classification", "segmentation")
NON_NEGATIVE = frozenset(
    {"steps", "lr", "l2", "tv", "rho", "jitter", "starts", "octaves", "samples", "ig_steps"}
    | {"data_samples", "shown", "max_filters", "max_maps", "max_channels", "scale"}
)


class Method(NamedTuple):
    run: Callable[[Context, Mapping[str, Any]], dict[str, Any]]
    tasks: tuple[str, ...]


METHODS: dict[str, Method] = {
    "filters": Method(filters, ANY_TASK),
    "feature_maps": Method(feature_maps, ANY_TASK),
    "activation_max": Method(activation_max, ANY_TASK),
    "class_models": Method(class_models, ("classification",)),
    "saliency": Method(saliency, ("classification",)),
    "deep_dream": Method(deep_dream, ANY_TASK),
}


def requested(cfg: DictConfig) -> list[str]:
    """The method names in ``visualize`` (a name or a list), checked; [] when null."""
    names = to_plain(cfg.get("visualize"))
    if not names:
        return []
    names = [names] if isinstance(names, str) else list(names)
    settings = to_plain(cfg.get("visualization")) or {}
    for name in names:
        if name not in METHODS:
            raise ConfigError(f"visualize: unknown method {name!r}; valid: {', '.join(METHODS)}")
        # Counts and weights up front, so that a typo fails before any method has run; each
        # method checks its own lower bounds (>= 1) and layers, classes and indices later.
        for key, value in (settings.get(name) or {}).items():
            if key in NON_NEGATIVE and value is not None:
                check_number(name, key, value)
    return names


def device_for(cfg: DictConfig) -> torch.device:
    """The trainer config's device: a GPU for gpu/cuda/auto when there is one, else the CPU."""
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def visualize(
    cfg: DictConfig,
    checkpoint: Checkpoint,
    datamodule: Any,
    report: dict[str, Any],
    output_dir: Path,
    loggers: Sequence[Logger],
) -> dict[str, Any]:
    """Run each method in ``cfg.visualize`` on the checkpoint's network; add what each reached
    to ``report`` under its name, write metrics.json, and return the report."""
    names = requested(cfg)
    model = checkpoint.model
    for name in names:
        if model.task not in METHODS[name].tasks:
            raise ConfigError(
                f"visualize: {name} is for {' and '.join(METHODS[name].tasks)} models; this is "
                f"a {model.task} model"
            )
    settings = to_plain(cfg.get("visualization")) or {}
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
    timings = {}
    for name in names:
        cpu, wall = time.process_time(), time.perf_counter()
        report[name] = METHODS[name].run(ctx, settings.get(name) or {})
        timings[name] = {
            "cpu_s": round(time.process_time() - cpu, 2),
            "wall_s": round(time.perf_counter() - wall, 2),
        }
    report["visualize_seconds"] = timings
    for logger in loggers:
        logger.save()
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
