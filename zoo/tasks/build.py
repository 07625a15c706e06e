"""Building what a run needs from plain config, the one way training and evaluation both use:
the task module, the image size the model takes, the datamodule."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from zoo import data, models
from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.tasks import TASKS, task_class
from zoo.tasks.base import ZooTask
from zoo.tasks.mixing import refuse_for_segmentation

log = logging.getLogger(__name__)


def task_options(options: Mapping[str, Any], module_cls: type[ZooTask]) -> dict[str, Any]:
    """The keys of the ``task:`` block that ``module_cls`` takes.

    The block holds the options of every task (label_smoothing, aux_loss_weight for
    classification; loss, dice_weight for segmentation); each module takes its own. A key that
    no task takes is a mistake.
    """
    unknown = sorted(set(options) - set().union(*(cls.options() for cls in TASKS.values())))
    if unknown:
        raise ConfigError(f"task.{unknown[0]} is not an option of any task ({sorted(TASKS)})")
    mine = module_cls.options()
    for key, value in options.items():
        others = [cls for cls in TASKS.values() if key in cls.options() and key not in mine]
        default = _default(others[0], key) if others else None
        if others and value != default:
            # Set for another task's model, it would be dropped without a word.
            shown = "null" if default is None else repr(default)
            raise ConfigError(
                f"task.{key}={value!r} is an option of {others[0].task} models; "
                f"{module_cls.__name__} takes no {key} (leave it at {shown})"
            )
    return {key: value for key, value in options.items() if key in mine}


def _default(module_cls: type[ZooTask], option: str) -> Any:
    for klass in module_cls.__mro__:
        parameter = inspect.signature(klass.__init__).parameters.get(option)
        if parameter is not None:
            return parameter.default
    return None


# Far above the zoo's largest network (VGG-19, 144 M): a spec that asks for more is a typo or
# a hostile file, and is refused on the meta device before a byte is allocated.
MAX_PARAMETERS = 2_000_000_000


def check_model_size(model: Mapping[str, Any]) -> None:
    """ConfigError where the registry model ``model`` would hold more than MAX_PARAMETERS
    weights (``model.num_classes=10**9``): counted on the meta device, so it costs nothing."""
    arguments = {k: v for k, v in model.items() if k not in ("name", "weights")}
    try:
        with torch.device("meta"):
            network = models.build(model.get("name"), **arguments)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err)) from err
    count = sum(p.numel() for p in network.parameters())
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"model {model.get('name')} with {arguments} would hold {count:,} parameters "
            f"({count * 4 / 2**30:,.0f} GiB in float32), over the limit of {MAX_PARAMETERS:,}: "
            "check model.* (num_classes, in_channels, widths)"
        )


def check_pairing(model_name: str, task: str, dataset: str | None) -> None:
    """ConfigError where the dataset's targets are not the model's task's: a U-Net's per-pixel
    loss on one label per image asks for tens of GB before failing, a classifier's on masks
    fails obscurely."""
    if dataset not in data.available() or data.task(dataset) == task:
        return
    fitting = [name for name in data.available() if data.task(name) == task]
    raise ConfigError(
        f"model {model_name!r} is a {task} network, but data={dataset} holds "
        f"{data.task(dataset)} targets: use a {task} dataset ({', '.join(fitting)})"
    )


def build_task(
    model: Mapping[str, Any],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None = None,
) -> ZooTask:
    """The task module for the registry model ``model`` (plain dicts all), before any data is
    touched; impossible values raise ConfigError.

    What the dataset says about itself comes first (``zoo.data.describe``: an image folder's
    class folders), so that ``model.num_classes`` may follow it and the class names are kept."""
    if data is not None:
        data = describe_data(data)
        if model.get("num_classes") is None and data.get("num_classes") is not None:
            model = {**model, "num_classes": data["num_classes"]}
    module_cls = task_class(model.get("name"))
    check_model_size(model)
    check_pairing(model.get("name"), module_cls.task, (data or {}).get("name"))
    try:
        refuse_for_segmentation(options or {}, module_cls.task)
        return module_cls(
            model=dict(model),
            optimizer=dict(optimizer),
            scheduler=dict(scheduler) if scheduler else None,
            data=dict(data) if data is not None else None,
            **task_options(options or {}, module_cls),
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


def task_from_config(cfg: DictConfig) -> ZooTask:
    """:func:`build_task` from a composed train config's model, optimizer, scheduler, data and
    task groups."""
    return build_task(
        to_plain(cfg.model),
        to_plain(cfg.optimizer),
        to_plain(cfg.scheduler) or None,
        to_plain(cfg.data),
        to_plain(cfg.get("task")) or {},
    )


# data.image_size above this is refused before anything is allocated, be it typed or read from
# a checkpoint (max_image_size in train.yaml and evaluate.yaml): at 4,096 px one RGB float32
# image is 200 MB before the first layer; at 10^5 px, 120 GB.
MAX_IMAGE_SIZE = 4096


def image_size(model: models.ZooModel, requested: int | None, max_size: int | None = None) -> int:
    """``requested`` (data.image_size), or the model's native size when None; checked against
    what the model accepts and against ``max_size`` (default ``MAX_IMAGE_SIZE``)."""
    size = requested or model.native_input_size[0]
    limit = MAX_IMAGE_SIZE if max_size is None else max_size
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"max_image_size must be an integer >= 1, got {limit!r}")
    if isinstance(size, bool) or not isinstance(size, int):
        raise ConfigError(f"data.image_size must be an integer or null, got {size!r}")
    if size > limit:
        raise ConfigError(
            f"data.image_size={size} is over max_image_size={limit}: an image that large "
            "would not fit in memory; set max_image_size=N if it is meant"
        )
    try:
        model.check_input_size(size)
    except ValueError as err:
        raise ConfigError(f"data.image_size={size}: {err}") from err
    return int(size)


def describe_data(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``zoo.data.describe`` (an image folder's classes), for a known dataset name."""
    if spec.get("name") not in data.available():
        return dict(spec)
    return data.describe(spec)


def follow_weights(module: ZooTask, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Datamodule arguments from the pretrained weights' own preprocessing (mean, std, the
    evaluation resize of ``weights.transforms()``) for each key that ``spec`` leaves null; a key
    it sets otherwise is kept, and the mismatch logged, as is a crop (``data.image_size``) other
    than the weights' (null is the model's native size, which is theirs). Nothing without
    weights."""
    pretrained = getattr(module, "pretrained", None)
    expected = getattr(pretrained, "preprocessing", None)
    if expected is None:
        return {}
    wanted = {
        "image_size": expected.crop_size,
        "resize_size": expected.resize_size,
        "mean": list(expected.mean),
        "std": list(expected.std),
    }
    accepted = data.arguments(spec["name"])
    if "mean" not in accepted:
        log.info(
            "data=%s has its own preprocessing; %s was measured with %s",
            spec["name"],
            pretrained.description,
            ", ".join(f"{key}={value}" for key, value in wanted.items()),
        )
        return {}
    overrides: dict[str, Any] = {}
    for key, value in wanted.items():
        given = spec.get(key)
        if given is None:
            if key != "image_size":  # image_size(): null is the native size, the weights' crop
                overrides[key] = value
        elif (list(given) if isinstance(given, list | tuple) else given) != value:
            log.warning(
                "data.%s=%s, but %s was measured with %s=%s: the data config is kept",
                key,
                given,
                pretrained.description,
                key,
                value,
            )
    return overrides


def build_datamodule(spec: Mapping[str, Any], **overrides: Any) -> pl.LightningDataModule:
    """``zoo.data.build``, with impossible values as ConfigError naming the data config."""
    try:
        return data.build(spec, **overrides)
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err
