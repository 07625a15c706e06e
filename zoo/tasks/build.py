"""Building what a run needs from plain config, the one way training and evaluation both use:
the task module, the image size the model takes, the datamodule."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from zoo import data, models
from zoo.core.config import to_plain
from zoo.core.errors import ConfigError, ZooError
from zoo.models import config as model_config
from zoo.tasks import task_class
from zoo.tasks.base import TaskOptions, ZooTask, nest_flat_options

log = logging.getLogger(__name__)


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


def check_task(
    model: Mapping[str, Any], dataset: str | None, options: Mapping[str, Any] | None
) -> tuple[type[ZooTask], TaskOptions]:
    """The task module class for the registry model ``model`` and its checked ``options``
    (``task``), with every check that needs no file: the model config's keys and types, its size
    (on the meta device), its task against the dataset's. ConfigError otherwise."""
    module_cls = task_class(model.get("name"))
    model_config.parse(model)  # the keys and types; the constructor checks the values
    check_model_size(model)
    check_pairing(model.get("name"), module_cls.task, dataset)
    return module_cls, module_cls.options_type.parse(options, "task")


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
    module_cls, checked = check_task(model, (data or {}).get("name"), options)
    try:
        return module_cls(
            model=dict(model),
            optimizer=dict(optimizer),
            scheduler=dict(scheduler) if scheduler else None,
            data=dict(data) if data is not None else None,
            options=checked,
        )
    except ValueError as err:
        raise ConfigError(str(err)) from err


# The task modules' arguments, as their checkpoints' hyper-parameters hold them.
TASK_ARGUMENTS = ("model", "optimizer", "scheduler", "data", "options")


def task_arguments(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyper-parameters as its task module's arguments, the task options still
    plain: as saved, or, from a checkpoint written before the task config group, translated from
    the flat layout (:func:`translate_flat_hparams`). ConfigError for keys that are neither.
    Every argument is there, None where the file holds none: evaluation needs only the model
    (and what it read its data with), not the optimizer that trained it."""
    arguments = dict(hparams) if "options" in hparams else translate_flat_hparams(hparams)
    unknown = sorted(set(arguments) - set(TASK_ARGUMENTS))
    if unknown:
        raise ConfigError(
            f"hyper-parameters {unknown} are not arguments of a task module: written by another "
            "version of zoo?"
        )
    return {key: arguments.get(key) for key in TASK_ARGUMENTS}


def translate_flat_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of a checkpoint written before the task config group, where the task
    module took its options as flat keywords (``label_smoothing``, ``adversarial_eps``,
    ``freeze``, ``mixup_alpha``, ``class_names``, ...), in today's layout: the model, optimizer,
    scheduler and data configs as they were, the options nested as zoo/configs/task/ has them
    (``nest_flat_options``), and ``class_names`` in the data config, where the module reads
    them (the module preferred them to the data config's)."""
    flat = dict(hparams)
    arguments = {key: flat.pop(key, None) for key in ("model", "optimizer", "scheduler", "data")}
    class_names = flat.pop("class_names", None)
    if class_names:
        arguments["data"] = {**(arguments["data"] or {}), "class_names": class_names}
    arguments["options"] = nest_flat_options(flat)
    return arguments


def task_from_config(cfg: DictConfig) -> ZooTask:
    """:func:`build_task` from a composed train config's model, optimizer, scheduler, data and
    task groups (``task``: zoo/configs/task/<the model's task>.yaml)."""
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


def build_datamodule(spec: Mapping[str, Any], **overrides: Any) -> data.ZooDataModule:
    """``zoo.data.build``, with impossible values as ConfigError naming the data config."""
    try:
        return data.build(spec, **overrides)
    except ZooError:
        raise  # the data config's schema, or the dataset, names what is wrong
    except ValueError as err:
        raise ConfigError(f"data: {err}") from err
