"""The model registry itself: ``MODELS`` and ``register_model``, which every family module
imports to register its variants. zoo.models imports the families, so the registry is full
whenever zoo.models is imported, and offers the registry's functions (build, available, ...)."""

from __future__ import annotations

from zoo.core.registry import Registry
from zoo.models.base import ZooModel

MODELS: Registry[ZooModel] = Registry("model")
register_model = MODELS.register
