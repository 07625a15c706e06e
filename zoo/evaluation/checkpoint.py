"""Loading a checkpoint for evaluation: read and checked by ``zoo.models.checkpoint`` (weights
only, no class paths, the model by registry name), the model first built on the meta device to
check the file's claims, then the task module rebuilt and its weights loaded strictly.

Nothing read from the file ever names code: the model comes from ``zoo.models`` by a registered
name with plain arguments, and the task module from the registry of tasks by that name.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from zoo import models
from zoo.core.errors import ConfigError
from zoo.models.checkpoint import CheckpointError, read_checkpoint
from zoo.models.loading import check_values, load_weights
from zoo.tasks import task_class
from zoo.tasks.base import ZooTask
from zoo.tasks.build import task_arguments

__all__ = ["Checkpoint", "CheckpointError", "load_checkpoint", "rebuild_task"]


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
    checkpoint = read_checkpoint(path)
    name, weights = checkpoint.model_name, checkpoint.weights
    # The file's claims are checked on the meta device first: absurd model arguments (a
    # billion classes) must be refused before they allocate anything real.
    try:
        with torch.device("meta"):
            skeleton = models.build(name, **checkpoint.model_arguments)
    except (ValueError, TypeError, RuntimeError, OverflowError) as err:
        # e.g. 10^30 classes: "Overflow when unpacking long long", then torch's C++ trace
        raise CheckpointError(f"{path}: its model spec does not build: {one_line(err)}") from err
    check_values(skeleton, weights, path)
    with warnings.catch_warnings():
        # Into meta tensors a load only checks keys and shapes, as it is meant to here.
        warnings.filterwarnings("ignore", message=".*copying from a non-meta parameter")
        load_weights(skeleton, weights, path)
    module = rebuild_task(name, checkpoint.hparams, path)
    load_weights(module.model, weights, path)
    return Checkpoint(module.eval(), checkpoint.hparams, checkpoint.data)


def rebuild_task(name: str, hparams: Mapping[str, Any], path: Path) -> ZooTask:
    """The task module of the model ``name`` from the checkpoint's plain hyper-parameters (the
    flat ones of checkpoints from before the task config group translated,
    ``zoo.tasks.build.task_arguments``), its options checked by the module's schema."""
    try:
        module_cls = task_class(name)
        arguments = task_arguments(hparams)
        # One pass over a split costs less than compiling for it.
        options = {**(arguments["options"] or {}), "compile": False}
        checked = module_cls.options_type.parse(options, "task")
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from err
    try:
        return module_cls(
            arguments["model"],
            arguments["optimizer"] or {},
            arguments.get("scheduler"),
            arguments.get("data"),
            checked,
        )
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: its model spec does not build: {one_line(err)}") from err


def one_line(err: BaseException) -> str:
    """The first line of an error message (torch's run on with a C++ trace)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
