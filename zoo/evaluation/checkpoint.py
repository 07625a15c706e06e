"""Loading a checkpoint as untrusted input: tensors and plain data only, the model rebuilt by
registry name, the weights loaded strictly.

A checkpoint is a pickle, and unpickling can run any code. ``torch.load(weights_only=True)``
admits only tensors and plain containers, and it is never retried with ``weights_only=False``
(timm's ``_torch_load`` is the model). Nothing read from the file ever names code: the model
comes from ``zoo.models`` by a registered name with plain arguments, and class paths or
``_target_`` keys are refused, never imported or instantiated.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from zoo import models
from zoo.core.errors import ConfigError
from zoo.models.loading import WeightsError, check_values, load_weights, safe_load
from zoo.tasks import task_class
from zoo.tasks.base import ZooTask

# Keys by which Hydra, jsonargparse and Lightning name code to import or call.
CLASS_PATH_KEYS = frozenset(
    {
        "_target_",
        "_partial_",
        "_args_",
        "_recursive_",
        "_convert_",
        "class_path",
        "init_args",
        "_class_path",
        "_instantiator",
    }
)
MODEL_PREFIX = "model."  # the zoo's LightningModules hold their network as ``self.model``
# Deeper nesting than this is refused before anything walks it: a zoo checkpoint is about 8 deep
# (optimizer state), and a hostile one 10^5 deep would end a recursive walk in RecursionError.
MAX_DEPTH = 64
# Data-config keys that guard this machine, dropped from a checkpoint's data config.
MACHINE_LIMITS = ("max_image_pixels",)


class CheckpointError(WeightsError):
    """A checkpoint that is missing, unreadable, hostile, or does not fit its own model."""


class Checkpoint(NamedTuple):
    """What a checkpoint holds once it has been checked: plain data and tensors, no code."""

    module: ZooTask  # the task module, rebuilt through the registry, weights loaded, CPU, eval
    hparams: dict[str, Any]  # the task module's plain hyper-parameters
    data: dict[str, Any]  # the run's plain data config (with the resolved image size), or {}

    @property
    def model(self) -> models.ZooModel:
        """The network inside the task module."""
        return self.module.model


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read ``path`` safely and rebuild its task module (the ``ClassificationModule`` or
    ``SegmentationModule`` that trained it) through the registry; CheckpointError if not.

    The tensors are mapped to the CPU, so a GPU checkpoint loads anywhere; move the module after.
    """
    path = Path(path)
    raw = read_checkpoint(path)
    hparams = raw.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path} holds no hyper_parameters: it is not a zoo checkpoint")
    check_plain_keys(hparams, f"{path}: its hyper-parameters")
    name, arguments = model_spec(hparams, path)
    refuse_class_paths(hparams, f"{path}: its hyper-parameters")
    data = data_spec(raw, path)
    for where in (hparams, data):
        check_class_names(where.get("class_names"), path)
    weights = network_weights(raw.get("state_dict"), path)
    # The file's claims are checked on the meta device first: absurd model arguments (a
    # billion classes) must be refused before they allocate anything real.
    try:
        with torch.device("meta"):
            skeleton = models.build(name, **arguments)
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        # e.g. 10^30 classes: "Overflow when unpacking long long", then torch's C++ trace
        raise CheckpointError(f"{path}: its model spec does not build: {one_line(err)}") from err
    check_values(skeleton, weights, path)
    with warnings.catch_warnings():
        # Into meta tensors a load only checks keys and shapes, as it is meant to here.
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        load_weights(skeleton, weights, path)
    module = rebuild_task(name, hparams, path)
    load_weights(module.model, weights, path)
    return Checkpoint(module.eval(), hparams, data)


def rebuild_task(name: str, hparams: Mapping[str, Any], path: Path) -> ZooTask:
    """The task module of the model ``name`` from the checkpoint's plain hyper-parameters."""
    try:
        module_cls = task_class(name)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    unknown = sorted(set(hparams) - module_cls.options())
    if unknown:
        raise CheckpointError(
            f"{path}: hyper-parameters {unknown} are not arguments of {module_cls.__name__}: "
            "written by another version of zoo?"
        )
    # One pass over a split costs less than compiling for it.
    arguments = {**hparams, "compile": False}
    try:
        return module_cls(**arguments)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its model spec does not build: {one_line(err)}") from err


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, read weights-only (``zoo.models.loading.safe_load``)."""
    raw = safe_load(path, "checkpoint")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} holds a {type(raw).__name__}, not a checkpoint dict")
    check_depth(raw, path)
    return raw


def check_depth(node: Any, path: Path, limit: int = MAX_DEPTH) -> None:
    """CheckpointError if containers nest deeper than ``limit``; walked with a stack of its own,
    so that the walks after it (which recurse) can't run out of Python's."""
    stack = [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, list | tuple | set):
            children = list(item)
        else:
            continue
        if depth >= limit:
            raise CheckpointError(
                f"{path}: its contents nest more than {limit} levels deep, which no checkpoint "
                "needs: a damaged or hostile file"
            )
        stack.extend((child, depth + 1) for child in children)


def check_plain_keys(node: Any, where: str) -> None:
    """CheckpointError for a mapping key under ``node`` that is not a string: config keys are
    names (optimizer states, keyed by parameter index, lie outside the hyper-parameters)."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if not isinstance(key, str):
                raise CheckpointError(
                    f"{where}: key {key!r} is a {type(key).__name__}, where config keys are strings"
                )
            check_plain_keys(value, where)
    elif isinstance(node, list | tuple):
        for value in node:
            check_plain_keys(value, where)


def check_class_names(names: Any, path: Path) -> None:
    """CheckpointError unless ``names`` is None or a list of strings (a string, a number or a
    mapping would be read as something else: characters, a crash, its keys)."""
    if names is None:
        return
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        shown = type(names).__name__
        if isinstance(names, list | tuple):
            odd = next(n for n in names if not isinstance(n, str))
            shown = f"a list holding {type(odd).__name__} {odd!r:.40}"
        raise CheckpointError(f"{path}: class_names must be a list of strings, got {shown}")


def one_line(err: BaseException) -> str:
    """The first line of an error message (torch's run on with a C++ trace)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def model_spec(hparams: Mapping[str, Any], path: Path) -> tuple[str, dict[str, Any]]:
    """The registry name and plain arguments of ``hparams["model"]``, or CheckpointError."""
    spec = hparams.get("model")
    if not isinstance(spec, dict):
        raise CheckpointError(
            f"{path}: hyper_parameters['model'] is not a spec {{'name': ..., **arguments}}: "
            "not a zoo checkpoint"
        )
    refuse_class_paths(spec, f"{path}: the model spec")
    spec = dict(spec)
    name = spec.pop("name", None)
    if name not in models.available():
        raise CheckpointError(
            f"{path}: model {name!r} is not a zoo model; available: {', '.join(models.available())}"
        )
    return name, spec


def data_spec(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The training run's data config, updated with its datamodule's resolved arguments."""
    data = raw["hyper_parameters"].get("data") or {}
    resolved = raw.get("datamodule_hyper_parameters") or {}
    if not isinstance(data, dict) or not isinstance(resolved, dict):
        raise CheckpointError(f"{path}: its data config is not a plain mapping")
    spec = {**data, **resolved}
    check_plain_keys(spec, f"{path}: the data config")
    refuse_class_paths(spec, f"{path}: the data config")
    # Safety limits are this machine's to set (the datamodule's default, or
    # +data.max_image_pixels=N), never the file's: a checkpoint could lift them.
    for key in MACHINE_LIMITS:
        spec.pop(key, None)
    return spec


def refuse_class_paths(node: Any, where: str) -> None:
    """CheckpointError if any key anywhere under ``node`` names code to import or call."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in CLASS_PATH_KEYS:
                raise CheckpointError(
                    f"{where} holds {key!r}: {value!r}; zoo builds models only from registry "
                    "names and never imports a class path read from a file"
                )
            refuse_class_paths(value, where)
    elif isinstance(node, list | tuple):
        for value in node:
            refuse_class_paths(value, where)


def network_weights(state_dict: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's tensors: the ``model.*`` entries of the task module's state_dict."""
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(f"{path} holds no state_dict")
    # Entries outside ``model.`` belong to the LightningModule around the network, not to it.
    weights = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in state_dict.items()
        if isinstance(key, str) and key.startswith(MODEL_PREFIX)
    }
    if not weights:
        raise CheckpointError(f"{path}: its state_dict has no {MODEL_PREFIX}* weights")
    not_tensors = sorted(k for k, v in weights.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: state_dict entries are not tensors: {not_tensors[:5]}")
    return weights
