"""Reading a zoo checkpoint as untrusted input, the one reader below ``evaluate.py ckpt_path=``,
``train.py ckpt_path=`` and ``model.weights=<checkpoint>``: the same checks on every path.

A checkpoint is a pickle, and unpickling can run any code. The file is read with
``torch.load(weights_only=True)`` only (``zoo.models.loading.safe_load``), never retried
without. Then its contents are checked before anything uses them: nesting no deeper than any
checkpoint needs, config keys that are strings, no key anywhere in the hyper-parameters or the
data config that names code (``_target_``, ``class_path``, ...: refused, never imported or
instantiated), a model named by its registry name with plain arguments, ``class_names`` a list
of strings, weights that are named tensors. What passes is a :class:`CheckpointFile`: plain data
and tensors, no code.

Whether the weights fit the model the file names, and hold finite values of the model's kinds,
is for the caller that builds the model (``zoo.models.loading.check_values``, ``load_weights``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zoo.models.loading import SizeLimit, WeightsError, safe_load
from zoo.models.registry import MODELS

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
# Keys Lightning writes into every checkpoint, and that no network names a tensor: a weights
# file holding one of them is a checkpoint, and is read as one.
CHECKPOINT_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version")
MODEL_PREFIX = "model."  # the zoo's LightningModules hold their network as ``self.model``
# Deeper nesting than this is refused before anything walks it: a zoo checkpoint is about 8 deep
# (optimizer state), and a hostile one 10^5 deep would end a recursive walk in RecursionError.
MAX_DEPTH = 64
# Data-config keys that guard the machine reading the file: the datamodule's default, or
# +data.max_image_pixels=N, never the file's (a checkpoint could lift them).
MACHINE_LIMITS = ("max_image_pixels",)


class CheckpointError(WeightsError):
    """A checkpoint that is missing, unreadable, hostile, or does not fit its own model."""


@dataclass(frozen=True)
class CheckpointFile:
    """A zoo checkpoint, read weights-only and checked: plain data and tensors, no code."""

    path: Path
    hparams: dict[str, Any]  # the task module's plain hyper-parameters, as saved
    model_name: str  # a registered name of zoo.models
    model_arguments: dict[str, Any]  # the plain arguments ``zoo.models.build`` gets with it
    # The run's plain data config with its datamodule's resolved arguments (the image size),
    # the machine limits dropped; {} if the file holds none.
    data: dict[str, Any]
    weights: dict[str, torch.Tensor]  # the network's: the state_dict's ``model.*`` tensors
    # The network's raw weights beside an average (callbacks=ema: ``current_model_state``, the
    # weights training goes on from), or None in a checkpoint without an average.
    raw_weights: dict[str, torch.Tensor] | None


def read_checkpoint(path: Path, limit: SizeLimit | None = None) -> CheckpointFile:
    """The zoo checkpoint at ``path``, read weights-only and checked; CheckpointError (or the
    WeightsError of ``safe_load``) in one line if it is not one.

    ``limit``: what the file may unpack to, where the caller holds the model it must fit
    (``SizeLimit.of_model``: ``train.py ckpt_path=``, ``model.weights=``). Without one (evaluate.py,
    which learns the model from the file), no file unpacks to more than it holds on disk."""
    return parse_checkpoint(safe_load(path, "checkpoint", limit), path)


def is_checkpoint(contents: Any) -> bool:
    """Whether ``contents`` (a file read weights-only) is a Lightning checkpoint rather than a
    bare state_dict of weights."""
    return isinstance(contents, Mapping) and any(key in contents for key in CHECKPOINT_KEYS)


def parse_checkpoint(contents: Any, path: Path) -> CheckpointFile:
    """The checked :class:`CheckpointFile` of ``contents``, what ``path`` held when it was read
    weights-only; CheckpointError naming the first thing that is wrong."""
    if not isinstance(contents, dict):
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a checkpoint dict")
    check_depth(contents, path)
    hparams = contents.get("hyper_parameters")
    if not isinstance(hparams, dict):
        raise CheckpointError(f"{path} holds no hyper_parameters: it is not a zoo checkpoint")
    check_plain_keys(hparams, f"{path}: its hyper-parameters")
    name, arguments = model_spec(hparams, path)
    refuse_class_paths(hparams, f"{path}: its hyper-parameters")
    data = data_spec(hparams, contents.get("datamodule_hyper_parameters"), path)
    for where in (hparams, data):
        check_class_names(where.get("class_names"), path)
    if "state_dict" not in contents:
        raise CheckpointError(f"{path} holds no state_dict")
    weights = network_weights(contents["state_dict"], "state_dict", path)
    raw = contents.get("current_model_state")
    if raw is not None:
        raw = network_weights(raw, "current_model_state", path)
    return CheckpointFile(path, hparams, name, arguments, data, weights, raw)


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
    if name not in MODELS.names():
        raise CheckpointError(
            f"{path}: model {name!r} is not a zoo model; available: {', '.join(MODELS.names())}"
        )
    return name, spec


def data_spec(hparams: Mapping[str, Any], resolved: Any, path: Path) -> dict[str, Any]:
    """The training run's data config (``hparams["data"]``), updated with its datamodule's
    resolved arguments (the checkpoint's ``datamodule_hyper_parameters``)."""
    data = hparams.get("data") or {}
    resolved = resolved or {}
    if not isinstance(data, dict) or not isinstance(resolved, dict):
        raise CheckpointError(f"{path}: its data config is not a plain mapping")
    spec = {**data, **resolved}
    check_plain_keys(spec, f"{path}: the data config")
    refuse_class_paths(spec, f"{path}: the data config")
    for key in MACHINE_LIMITS:
        spec.pop(key, None)
    return spec


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


def named_tensors(state: Any, part: str, path: Path) -> dict[str, torch.Tensor]:
    """``state`` (the checkpoint's ``part``) as it must be: tensors under string keys."""
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{path}: its {part} is a {type(state).__name__}, not a mapping of named tensors"
        )
    not_named = [key for key in state if not isinstance(key, str)]
    if not_named:
        raise CheckpointError(f"{path}: {part} keys are not strings: {not_named[:5]!r}")
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"{path}: {part} entries are not tensors: {not_tensors[:5]}")
    return dict(state)


def network_weights(state: Any, part: str, path: Path) -> dict[str, torch.Tensor]:
    """The network's tensors in the task module's ``state`` (the checkpoint's ``part``): its
    ``model.*`` entries, named as the network names them. The other entries belong to the
    LightningModule around the network."""
    weights = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in named_tensors(state, part, path).items()
        if key.startswith(MODEL_PREFIX)
    }
    if not weights:
        raise CheckpointError(f"{path}: its {part} has no {MODEL_PREFIX}* weights")
    return weights
