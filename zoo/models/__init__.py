"""The model registry, in the manner of timm's ``list_models`` / ``create_model``.

>>> from zoo import models
>>> models.available()  # doctest: +NORMALIZE_WHITESPACE
['alexnet', 'googlenet', 'lenet', 'resnet18', 'resnet34', 'resnet50', 'unet',
 'vgg11', 'vgg11_bn', 'vgg13', 'vgg13_bn', 'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn']
>>> net = models.build("resnet18", num_classes=10, in_channels=1, small_input=True)
>>> net = models.build("resnet18", weights="IMAGENET1K_V1", num_classes=10)  # doctest: +SKIP
>>> net = models.build("lenet", weights="DEFAULT")  # the zoo's own MNIST_V1  # doctest: +SKIP
>>> models.input_spec("vgg16")  # read from the class: nothing is built
InputSpec(native=224, minimum=32, multiple=1, exact=False)

A family of variants is one class registered under several names with fixed arguments
(``register_model("resnet34", ResNet, block=BasicBlock, layers=(3, 4, 6, 3))``);
``MODELS.get(name)`` is then the family's class, and ``MODELS.entry(name).fixed`` the arguments
that the name stands for, which ``build`` supplies and refuses from callers.
"""

from __future__ import annotations

from typing import Any

from zoo.models import alexnet, googlenet, lenet, resnet, unet, vgg
from zoo.models.base import InputSpec, ZooModel
from zoo.models.registry import MODELS, register_model
from zoo.models.weights import Pretrained, load_pretrained
from zoo.models.weights import resolve as resolve_weights

# The family modules, whose import registers their variants in MODELS.
FAMILIES = (alexnet, googlenet, lenet, resnet, unet, vgg)


def available() -> list[str]:
    """The names ``build`` accepts, sorted."""
    return MODELS.names()


def build(name: str, weights: str | Pretrained | None = None, **kwargs: Any) -> ZooModel:
    """Build a registered model by name; unknown names or arguments raise a ValueError.

    ``weights``: torchvision's weights by enum name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) for the
    torchvision-shaped models, the zoo's own (``"MNIST_V1"``, ``"MNIST_ROBUST_V1"`` for LeNet-5,
    ``"MNIST_SEGMENTATION_V1"`` for U-Net; ``"DEFAULT"`` picks the model's best set: the zoo's
    own where it has one), a path to a state_dict or safetensors file, or what ``pretrained``
    resolved
    (zoo.models.weights: verified at every load, read weights-only, fitted to ``num_classes``
    and ``in_channels``). Its errors are ``WeightsError``s (a ConfigError, so a ValueError too).
    """
    if weights is None:
        return MODELS.build(name, **kwargs)
    resolved = weights if isinstance(weights, Pretrained) else pretrained(name, weights, **kwargs)
    model = MODELS.build(name, **resolved.arguments)
    load_pretrained(model, resolved)
    return model


def pretrained(name: str, weights: str, **kwargs: Any) -> Pretrained:
    """The weights ``build(name, weights=weights, **kwargs)`` would load, resolved without
    reading anything: their file, URL, digest, categories, accuracy and preprocessing, and the
    constructor arguments they need (GoogLeNet's ``transform_input``)."""
    return resolve_weights(MODELS, name, weights, **kwargs)


def input_spec(name: str, weights: object = None, **kwargs: object) -> InputSpec:
    """The input sizes ``build(name, **kwargs)`` would accept, read without building it.
    Unknown names or arguments raise the same ValueError as ``build``; ``weights`` change no
    size."""
    arguments = MODELS.arguments(name, **kwargs)
    model_cls = MODELS.get(name)
    if not (isinstance(model_cls, type) and issubclass(model_cls, ZooModel)):
        raise TypeError(f"model {name!r} is registered as {model_cls!r}, not a ZooModel class")
    return model_cls.input_spec_for(**arguments)


__all__ = [
    "InputSpec",
    "Pretrained",
    "ZooModel",
    "available",
    "build",
    "input_spec",
    "pretrained",
    "register_model",
]
