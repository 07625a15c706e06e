"""The ``model`` config group's schema: ``name``, ``weights`` and the registered model's own
constructor arguments, typed as the constructor declares them.

A model's options are its constructor's arguments, so the schema is read from the registry
rather than written out a second time beside each family: ``schema("resnet18")`` has the fields
``num_classes``, ``in_channels``, ``small_input`` and ``zero_init_residual`` with their types and
defaults (the arguments a variant fixes, such as ResNet-34's ``layers``, are not options). The
bounds of the values stay in the constructors, which check them when the model is built on the
meta device before any data is loaded (``zoo.tasks.build.check_model_size``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema
from zoo.models import MODELS

# Argument types a config can hold, as OmegaConf checks them; any other is kept as Any.
PLAIN_TYPES = (int, float, bool, str)


@dataclasses.dataclass
class ModelConfig(Schema):
    """What every model config holds beside its constructor's arguments."""

    name: str = dataclasses.MISSING  # type: ignore[assignment]
    # A weights name (torchvision's IMAGENET1K_V1, DEFAULT) or a file (zoo.models.weights).
    weights: str | None = None


def _config_type(annotation: Any) -> Any:
    """``annotation`` where OmegaConf can check it (a plain type, optionally None), else Any."""
    if annotation in PLAIN_TYPES:
        return annotation
    arguments = typing.get_args(annotation)
    plain = [a for a in arguments if a is not type(None)]
    if len(plain) == 1 and len(arguments) == 2 and plain[0] in PLAIN_TYPES:
        return plain[0] | None
    return Any


@functools.cache
def schema(name: str) -> type[ModelConfig]:
    """The schema of ``model=name``: ModelConfig plus the model's constructor arguments."""
    entry = MODELS.entry(name)
    builder = entry.builder
    hints = typing.get_type_hints(builder.__init__ if isinstance(builder, type) else builder)
    parameters = inspect.signature(builder).parameters
    fields = [
        (
            argument,
            _config_type(hints.get(argument, Any)),
            dataclasses.field(default=parameters[argument].default),
        )
        for argument in entry.arguments
    ]
    config = dataclasses.make_dataclass(f"{name}_config", fields, bases=(ModelConfig,))
    config.title = f"model={name}"
    return config


def parse(spec: Mapping[str, Any] | DictConfig) -> ModelConfig:
    """The model config ``spec`` checked against its model's schema; ConfigError naming
    ``model.<key>`` for an unknown key or a value of the wrong type."""
    name = spec.get("name")
    if name not in MODELS:
        raise ConfigError(
            f"model.name {name!r} is not a zoo model; available: {', '.join(MODELS.names())}"
        )
    return schema(name).parse(spec, "model")
