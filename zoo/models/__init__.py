"""The model registry, in the manner of timm's ``list_models`` / ``create_model``.

>>> from zoo import models
>>> models.available()  # doctest: +NORMALIZE_WHITESPACE
['alexnet', 'googlenet', 'lenet', 'resnet18', 'resnet34', 'resnet50', 'unet',
 'vgg11', 'vgg13', 'vgg16', 'vgg19']
>>> net = models.build("resnet18", num_classes=10, in_channels=1, small_input=True)
>>> models.input_spec("vgg16")  # read from the class: nothing is built
InputSpec(native=224, minimum=32, multiple=1, exact=False)

A family of variants is one class registered under several names with fixed arguments
(``register_model("resnet34", ResNet, block=BasicBlock, layers=(3, 4, 6, 3))``);
``MODELS.get(name)`` is then the family's class, and ``MODELS.entry(name).fixed`` the arguments
that the name stands for, which ``build`` supplies and refuses from callers.
"""

from __future__ import annotations

from zoo.core.registry import Registry
from zoo.models.base import InputSpec, ZooModel

MODELS: Registry[ZooModel] = Registry("model")
register_model = MODELS.register


def available() -> list[str]:
    """The names ``build`` accepts, sorted."""
    return MODELS.names()


def build(name: str, **kwargs: object) -> ZooModel:
    """Build a registered model by name; unknown names or arguments raise a ValueError."""
    return MODELS.build(name, **kwargs)


def input_spec(name: str, **kwargs: object) -> InputSpec:
    """The input sizes ``build(name, **kwargs)`` would accept, read without building it.
    Unknown names or arguments raise the same ValueError as ``build``."""
    arguments = MODELS.arguments(name, **kwargs)
    model_cls = MODELS.get(name)
    if not (isinstance(model_cls, type) and issubclass(model_cls, ZooModel)):
        raise TypeError(f"model {name!r} is registered as {model_cls!r}, not a ZooModel class")
    return model_cls.input_spec_for(**arguments)


# Importing the families fills the registry.
from zoo.models import alexnet, googlenet, lenet, resnet, unet, vgg  # noqa: E402, F401

__all__ = ["InputSpec", "ZooModel", "available", "build", "input_spec", "register_model"]
