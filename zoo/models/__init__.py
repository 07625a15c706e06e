"""The model registry, in the manner of timm's ``list_models`` / ``create_model``.

>>> from zoo import models
>>> models.available()
['alexnet', 'googlenet', 'lenet', 'resnet18', 'unet', 'vgg16']
>>> net = models.build("resnet18", num_classes=10, in_channels=1, small_input=True)
"""

from __future__ import annotations

from zoo.models.base import ZooModel
from zoo.registry import Registry

MODELS: Registry[ZooModel] = Registry("model")
register_model = MODELS.register


def available() -> list[str]:
    """The names ``build`` accepts, sorted."""
    return MODELS.names()


def build(name: str, **kwargs: object) -> ZooModel:
    """Build a registered model by name; unknown names or arguments raise a ValueError."""
    return MODELS.build(name, **kwargs)


# Importing the families fills the registry.
from zoo.models import alexnet, googlenet, lenet, resnet, unet, vgg  # noqa: E402, F401

__all__ = ["ZooModel", "available", "build", "register_model"]
