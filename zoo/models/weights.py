"""Pretrained weights in the zoo's models: torchvision's published ImageNet weights, by their
enum names (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT``), the zoo's own weights trained on
MNIST (``MNIST_V1``, ``MNIST_ROBUST_V1``, ``MNIST_SEGMENTATION_V1``: zoo.models.trained_weights),
or a local state_dict or safetensors file. ``DEFAULT`` is the model's best set: the zoo's own
where it has one, else torchvision's.

>>> from zoo import models
>>> net = models.build("resnet18", weights="IMAGENET1K_V1", num_classes=10)  # new 10-class head
>>> net = models.build("lenet", weights="MNIST_ROBUST_V1")  # doctest: +SKIP

torchvision's ``Weights`` enums are read offline for what they describe (URL, file name,
categories, published accuracy, preprocessing), never for their loader:
``WeightsEnum.get_state_dict`` is ``torch.hub.load_state_dict_from_url``, which checks the
sha256 only while downloading and then unpickles the cached file with ``weights_only=False``.
Here the file is the one torch.hub would use (``$TORCH_HOME/hub/checkpoints/<torchvision's
file name>``), downloaded there from torchvision's URL only when the file is missing and the
host can be reached (never with ``ZOO_OFFLINE=1``), and **every** load checks its sha256
against the prefix in its file name before ``zoo.models.loading.safe_load`` reads it
weights-only. Whatever is wrong ends as a ``WeightsError``: one line naming the file and how to
fix it.

The zoo's own weights ship inside the package as safetensors files (no pickle), under the same
rule: the sha256 prefix in each file's name is checked at every load, then the file's header
against the network its card names before any tensor is read. Their constructor arguments are
applied (the robust LeNet-5 is ``modern=true``); a value the caller sets otherwise is a
ConfigError.

The weights are then fitted to the model as asked:

- ``num_classes`` other than the weights' 1000: the ``head_names`` modules (GoogLeNet's
  auxiliary classifiers too) keep their fresh initialisation, and a log line lists the tensors
  not loaded;
- ``in_channels`` other than 3: the first convolution's RGB kernels are summed (1 channel) or
  repeated and rescaled, as timm's ``adapt_input_conv`` does;
- GoogLeNet: ``transform_input`` defaults to true, as in torchvision's ``googlenet(weights=...)``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torch.hub
from torchvision import models as tv_models
from torchvision.models import WeightsEnum

from zoo.core.errors import ConfigError
from zoo.core.files import file_digest, path_problem
from zoo.core.registry import Registry
from zoo.models import trained_weights
from zoo.models.base import ZooModel
from zoo.models.checkpoint import is_checkpoint, named_tensors, parse_checkpoint
from zoo.models.loading import SizeLimit, WeightsError, check_values, load_weights, safe_load
from zoo.models.registry import MODELS

log = logging.getLogger(__name__)

# The registry names whose state_dict keys are torchvision's (vgg16 with batch_norm=True is
# vgg16_bn). Their weights are torchvision's ``<Name>_Weights`` enums.
TORCHVISION_SHAPED = (
    "alexnet",
    "googlenet",
    "resnet18",
    "resnet34",
    "resnet50",
    *(f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")),
)
# Constructor arguments torchvision's weights need: its networks have no other shape.
REQUIRED_ARGUMENTS: dict[str, dict[str, Any]] = {
    "alexnet": {"variant": "torchvision", "lrn": False},
    **{name: {"small_input": False} for name in ("resnet18", "resnet34", "resnet50")},
}
# Arguments whose ``None`` means another value with torchvision's weights, as in torchvision.
WEIGHTS_DEFAULTS: dict[str, dict[str, Any]] = {"googlenet": {"transform_input": True}}
ENUM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
# A local file carries a digest the way torch.hub's names do: "<name>-<hex prefix>.<ext>".
LOCAL_HASH = re.compile(r"-([a-f0-9]{8,})\.[A-Za-z]+$")
OFFLINE_VARIABLE = "ZOO_OFFLINE"
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Preprocessing:
    """The evaluation preprocessing the weights were measured with (``weights.transforms()``)."""

    crop_size: int
    resize_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str


@dataclass(frozen=True)
class Pretrained:
    """One set of weights for one registry model, resolved but not yet read.

    ``arguments`` are the constructor arguments the model is built with (the caller's, with the
    weights' defaults filled in), so that a checkpoint records the network the weights went into.
    """

    model: str
    source: str  # how the user named them: "IMAGENET1K_V1" or the path
    path: Path
    arguments: dict[str, Any] = field(default_factory=dict)
    enum: str | None = None  # "ResNet18_Weights.IMAGENET1K_V1" for torchvision's
    trained: str | None = None  # "MNIST_V1" for the zoo's own (zoo.models.trained_weights)
    url: str | None = None
    sha256_prefix: str | None = None
    categories: tuple[str, ...] | None = field(default=None, repr=False)
    metrics: Mapping[str, float] = field(default_factory=dict)
    preprocessing: Preprocessing | None = None
    # The zoo's own: the data config they were trained and measured on (their card's), which
    # evaluate.py evaluates them on when no data= is given.
    data: Mapping[str, Any] | None = None
    # The fields of torchvision's ``Weights.meta``: its own, or the zoo's model card.
    meta: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def description(self) -> str:
        """How log lines and reports name the weights."""
        return f"{self.model} {self.enum or self.trained or self.path}"

    @property
    def publisher(self) -> str:
        """Who made them: torchvision, the zoo, or the user (a file)."""
        return "torchvision" if self.enum else "zoo" if self.trained else "file"

    def summary(self) -> dict[str, Any]:
        """Plain data for checkpoints and reports: where the weights came from."""
        return {
            "model": self.model,
            "weights": self.enum or self.trained or self.source,
            "file": self.path.name,
            "sha256_prefix": self.sha256_prefix,
        }


def torchvision_name(name: str, arguments: Mapping[str, Any]) -> str | None:
    """torchvision's builder name for the registry model ``name`` built with ``arguments``, or
    None where torchvision has no such network (LeNet-5, U-Net, the original AlexNet)."""
    if name not in TORCHVISION_SHAPED:
        return None
    if name.startswith("vgg") and not name.endswith("_bn") and arguments.get("batch_norm"):
        return f"{name}_bn"
    return name


def weights_enum(tv_name: str) -> type[WeightsEnum]:
    """torchvision's ``<Name>_Weights`` enum for its builder ``tv_name`` (read offline)."""
    return tv_models.get_model_weights(tv_name)


def resolve(
    models: Registry[ZooModel], name: str, weights: str | os.PathLike[str], **kwargs: Any
) -> Pretrained:
    """The weights ``weights`` names for ``models.build(name, **kwargs)``: the name of one of the
    zoo's own sets or of torchvision's weights for that network, or a path. Nothing is read yet;
    an impossible combination is a ConfigError that says what would work."""
    arguments = complete_arguments(models, name, kwargs)
    text = os.fspath(weights) if isinstance(weights, str | os.PathLike) else None
    if not text:
        raise ConfigError(
            f"model.weights must be a torchvision weights name or a file, got {weights!r}"
        )
    if ENUM_NAME.match(text) and not Path(text).exists():
        own = trained_weights.find(name, text)
        if own is not None:
            return _trained_weights(models, own, text, kwargs)
        if trained_weights.weight_sets(name) and text not in torchvision_names(name, arguments):
            raise ConfigError(
                f"model.weights={text} is not a weights name of {name}: "
                f"{', '.join(weights_names(name, arguments))} (or a path to a weights file)"
            )
        return _torchvision_weights(name, text, kwargs, arguments)
    path = Path(text).expanduser()
    found = LOCAL_HASH.search(path.name)
    return Pretrained(
        model=name,
        source=text,
        path=path,
        arguments=dict(kwargs),
        sha256_prefix=found.group(1) if found else None,
    )


def complete_arguments(
    models: Registry[ZooModel], name: str, kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Every constructor argument ``build(name, **kwargs)`` uses: fixed, given and defaults."""
    arguments = models.arguments(name, **kwargs)  # refuses unknown names and arguments
    signature = inspect.signature(models.get(name))
    defaults = {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {**defaults, **arguments}


def torchvision_names(name: str, arguments: Mapping[str, Any]) -> list[str]:
    """The names of torchvision's weights with a classifier for ``name`` built with
    ``arguments``, and ``DEFAULT``; none where torchvision has no such network."""
    tv_name = torchvision_name(name, arguments)
    if tv_name is None:
        return []
    members = [member.name for member in weights_enum(tv_name) if member.meta.get("categories")]
    return [*members, "DEFAULT"]


def weights_names(name: str, arguments: Mapping[str, Any]) -> list[str]:
    """Every weights name ``model.weights`` takes for ``name``: the zoo's own sets, then
    torchvision's, and ``DEFAULT`` once."""
    own = [weight_set.name for weight_set in trained_weights.weight_sets(name)]
    theirs = [tv for tv in torchvision_names(name, arguments) if tv != "DEFAULT"]
    return [*own, *theirs, "DEFAULT"]


def _trained_weights(
    models: Registry[ZooModel],
    weight_set: trained_weights.WeightSet,
    source: str,
    kwargs: Mapping[str, Any],
) -> Pretrained:
    """One of the zoo's own sets, as its card describes it (WeightsError if this installation
    has no card for it)."""
    card = trained_weights.card_of(weight_set)
    return Pretrained(
        model=weight_set.model,
        source=source,
        path=trained_weights.TRAINED_DIR / card.file,
        arguments=trained_arguments(models, weight_set, card.arguments, kwargs),
        trained=weight_set.name,
        sha256_prefix=published_prefix(card.file),
        categories=tuple(card.categories),
        metrics=dict(card._metrics.get(weight_set.dataset, {})),
        data=dict(card.data),
        meta=card.to_dict(),
    )


def trained_arguments(
    models: Registry[ZooModel],
    weight_set: trained_weights.WeightSet,
    trained_with: Mapping[str, Any],
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    """The caller's constructor arguments with those of the network the zoo's set was trained
    in (``trained_with``, from its card) where the caller leaves them out, null or at the
    constructor's default (a model config states every argument, so a default can't be told from
    a choice). ``num_classes`` stays the caller's: another number of classes gets a new head, as
    with torchvision's weights. Any other value that differs is a ConfigError."""
    defaults = complete_arguments(models, weight_set.model, {})
    arguments = dict(kwargs)
    for key, wanted in trained_with.items():
        given = kwargs.get(key)
        if given is not None and given != wanted:
            if key == "num_classes":
                continue
            if given != defaults.get(key):
                raise ConfigError(
                    f"model.weights={weight_set.name} was trained with "
                    f"model.{key}={_shown(wanted)}, not {_shown(given)}: leave model.{key} out, "
                    "or train weights of your own"
                )
            log.info(
                "%s: model.%s=%s, the network the weights were trained in",
                weight_set.description,
                key,
                _shown(wanted),
            )
        if given is None or key != "num_classes":
            arguments[key] = wanted
    return arguments


def _shown(value: Any) -> str:
    """A value as it is typed on the command line (true, not True)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _torchvision_weights(
    name: str, enum_name: str, kwargs: Mapping[str, Any], arguments: Mapping[str, Any]
) -> Pretrained:
    tv_name = torchvision_name(name, arguments)
    if tv_name is None:
        raise ConfigError(
            f"model.weights={enum_name}: torchvision publishes no weights for {name}; "
            "give a path to a state_dict file instead"
        )
    enum_cls = weights_enum(tv_name)
    names = [member.name for member in enum_cls] + ["DEFAULT"]
    if enum_name not in names:
        raise ConfigError(
            f"model.weights={enum_name} is not one of torchvision's {enum_cls.__name__}: "
            f"{', '.join(names)} (or a path to a state_dict file)"
        )
    member = enum_cls[enum_name]
    for key, wanted in REQUIRED_ARGUMENTS.get(name, {}).items():
        if arguments.get(key) != wanted:
            raise ConfigError(
                f"model.weights={enum_name} is torchvision's {tv_name}, which needs "
                f"model.{key}={str(wanted).lower() if isinstance(wanted, bool) else wanted} "
                f"(got {arguments.get(key)!r})"
            )
    categories = member.meta.get("categories")
    if not categories:
        # VGG16's IMAGENET1K_FEATURES: its classifier is NaN in torchvision's own file.
        raise ConfigError(
            f"model.weights={enum_name} ({enum_cls.__name__}.{member.name}) has no classifier "
            f"weights; use one of {', '.join(m.name for m in enum_cls if m.meta.get('categories'))}"
        )
    filled = dict(kwargs)
    for key, value in WEIGHTS_DEFAULTS.get(name, {}).items():
        if filled.get(key) is None:
            filled[key] = value
    file_name = os.path.basename(urlparse(member.url).path)
    transforms = member.transforms()
    metrics = member.meta.get("_metrics", {}).get("ImageNet-1K", {})
    return Pretrained(
        model=name,
        source=enum_name,
        path=cache_dir() / file_name,
        arguments=filled,
        enum=f"{enum_cls.__name__}.{member.name}",
        url=member.url,
        sha256_prefix=published_prefix(file_name),
        categories=tuple(categories),
        metrics={key: float(value) for key, value in metrics.items()},
        meta=dict(member.meta),
        preprocessing=Preprocessing(
            crop_size=int(transforms.crop_size[0]),
            resize_size=int(transforms.resize_size[0]),
            mean=tuple(float(m) for m in transforms.mean),
            std=tuple(float(s) for s in transforms.std),
            interpolation=transforms.interpolation.value,
        ),
    )


def published_prefix(file_name: str) -> str | None:
    """The sha256 prefix torchvision's file name carries ("resnet18-f37072fd.pth"), found by
    torch.hub's own rule."""
    found = torch.hub.HASH_REGEX.search(file_name)
    return found.group(1) if found else None


def cache_dir() -> Path:
    """torch.hub's cache of weights files: ``$TORCH_HOME/hub/checkpoints`` (``~/.cache/torch``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def offline() -> bool:
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in ("1", "true", "yes")


def reachable(url: str) -> bool:
    """Whether a TCP connection to the URL's host opens within a few seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


def fetch(pretrained: Pretrained) -> Path:
    """The weights file on this machine: in torch.hub's cache, downloaded there first when it is
    missing and torchvision's server can be reached; else a WeightsError saying where to put it.
    """
    path = pretrained.path
    if path.is_file():
        return path
    if pretrained.trained is not None:
        raise WeightsError(
            f"{pretrained.description}: the zoo's file {path} {path_problem(path, 'file')}: "
            "reinstall the zoo, or restore the file from its repository"
        )
    if pretrained.url is None:
        raise WeightsError(f"model.weights: {path} {path_problem(path, 'file')}")
    how = (
        f"download {pretrained.url} and put it at {path} (its sha256 begins "
        f"{pretrained.sha256_prefix}; $TORCH_HOME moves the cache)"
    )
    host = urlparse(pretrained.url).hostname
    if offline() or not reachable(pretrained.url):
        why = f"{OFFLINE_VARIABLE} is set" if offline() else f"{host} cannot be reached"
        raise WeightsError(f"{pretrained.description}: no file {path.name}, and {why}: {how}")
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("Downloading %s to %s", pretrained.url, path)
    try:
        # Checks the digest before moving the download into place.
        torch.hub.download_url_to_file(pretrained.url, str(path), pretrained.sha256_prefix)
    except (OSError, URLError, RuntimeError) as err:
        raise WeightsError(f"{pretrained.description}: downloading failed ({err}): {how}") from err
    return path


def verify(pretrained: Pretrained, path: Path) -> None:
    """WeightsError unless the file's sha256 begins with the prefix its name carries: checked at
    every load, not only at download as torch.hub does, so that a cache file damaged, truncated
    or replaced since is refused before it is unpickled."""
    prefix = pretrained.sha256_prefix
    if prefix is None:
        log.info("%s carries no sha256 in its name: not verified", path)
        return
    actual = file_digest(path, "sha256")
    if not actual.startswith(prefix):
        fix = (
            f"delete it to download {pretrained.url} again, or put torchvision's file there"
            if pretrained.url
            else "reinstall the zoo, or restore the file from its repository"
            if pretrained.trained
            else "replace it with the file that name promises"
        )
        raise WeightsError(
            f"refusing {path}: its sha256 begins {actual[: len(prefix)]}, but its name promises "
            f"{prefix}: the file is damaged, truncated or not the published one; {fix}"
        )


def read_state_dict(pretrained: Pretrained, limit: SizeLimit) -> dict[str, torch.Tensor]:
    """The file's tensors, fetched, verified and read weights-only, the file unpacking to no
    more than ``limit`` (what the model they go into can need). A zoo (Lightning) checkpoint is
    accepted too, checked as evaluate.py checks one (zoo.models.checkpoint): its network's
    weights are the file's. A safetensors file (the zoo's own weights) is read by safetensors'
    loader, its header checked first: against ``limit``, and for the zoo's own sets against the
    network their card names."""
    path = fetch(pretrained)
    verify(pretrained, path)
    if path.suffix == trained_weights.SUFFIX:
        return trained_weights.read_safetensors(path, limit, trained_network(pretrained))
    raw = safe_load(path, "weights file", limit)
    if is_checkpoint(raw):
        return parse_checkpoint(raw, path).weights
    if not isinstance(raw, Mapping) or not raw:
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not a state_dict of weights")
    return named_tensors(raw, "state_dict", path)


def trained_network(pretrained: Pretrained) -> dict[str, torch.Tensor] | None:
    """The state_dict, on the meta device, of the network the zoo's own set was trained in (its
    card's arguments: the file must hold exactly its tensors); None for any other weights."""
    if pretrained.trained is None:
        return None
    with torch.device("meta"):
        return MODELS.build(pretrained.model, **pretrained.meta["arguments"]).state_dict()


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    """An RGB first-layer kernel for ``in_channels`` inputs, as timm's ``adapt_input_conv``:
    1 channel sums the three (a grey image then gives what the RGB network gives on three equal
    channels); more repeat them, scaled by 3 / in_channels to keep the activations' size.
    Written out rather than importing timm for one function."""
    original = weight.dtype
    weight = weight.float()
    channels = weight.shape[1]
    if channels != 3:
        raise ValueError(f"only RGB kernels can be adapted, this one has {channels} channels")
    if in_channels == 1:
        weight = weight.sum(dim=1, keepdim=True)
    else:
        repeat = math.ceil(in_channels / 3)
        weight = weight.repeat(1, repeat, 1, 1)[:, :in_channels] * (3 / in_channels)
    return weight.to(original)


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def fit_to_model(
    model: ZooModel, weights: dict[str, torch.Tensor], pretrained: Pretrained
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The file's tensors made to fit ``model``'s heads and input channels, and the names of the
    model's tensors that keep their own initialisation (a new head)."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    not_loaded: list[str] = []
    for head in type(model).head_names:
        if modules.get(head) is None:
            # GoogLeNet without aux_logits: torchvision's file holds its auxiliary heads all the
            # same (and torchvision drops them the same way).
            weights = {k: v for k, v in weights.items() if not _under(k, head)}
            continue
        theirs = {k: v for k, v in weights.items() if _under(k, head)}
        mine = {k: v for k, v in own.items() if _under(k, head)}
        other_classes = pretrained.categories is not None and model.num_classes != len(
            pretrained.categories
        )
        misfit = any(k in mine and v.shape != mine[k].shape for k, v in theirs.items())
        if other_classes or misfit:
            weights = {k: v for k, v in weights.items() if not _under(k, head)} | mine
            not_loaded += list(mine)
    conv = type(model).first_conv
    if conv is not None and conv in weights and conv in own:
        kernel = weights[conv]
        if kernel.dim() == 4 and kernel.shape[1] != own[conv].shape[1] == model.in_channels:
            if kernel.shape[1] != 3:
                raise WeightsError(
                    f"{pretrained.path}: weight {conv!r} reads {kernel.shape[1]} input channels, "
                    f"the model {model.in_channels} (model.in_channels): only RGB (3-channel) "
                    "kernels are adapted"
                )
            weights[conv] = adapt_input_conv(model.in_channels, kernel)
            log.info(
                "%s: %s adapted from %d to %d input channels (timm's adapt_input_conv)",
                pretrained.description,
                conv,
                kernel.shape[1],
                model.in_channels,
            )
    return weights, not_loaded


def load_pretrained(model: ZooModel, pretrained: Pretrained) -> list[str]:
    """Load ``pretrained`` into ``model`` (strictly, once fitted); return the tensors that kept
    the model's own initialisation, which a log line lists."""
    weights = read_state_dict(pretrained, SizeLimit.of_model(model))
    # Before fitting, which drops a head that does not fit: NaN is refused there too.
    check_values(model, weights, pretrained.path)
    weights, not_loaded = fit_to_model(model, weights, pretrained)
    load_weights(model, weights, pretrained.path)
    if not_loaded:
        log.info(
            "%s: %d tensors not loaded, initialised afresh for %d classes: %s",
            pretrained.description,
            len(not_loaded),
            model.num_classes,
            ", ".join(not_loaded),
        )
    else:
        log.info("%s: every tensor loaded from %s", pretrained.description, pretrained.path)
    if getattr(model, "aux1", None) is not None and pretrained.enum and not not_loaded:
        log.warning(
            "%s: GoogLeNet's auxiliary heads in torchvision's file are not trained: train them "
            "(or model.aux_logits=false)",
            pretrained.description,
        )
    return not_loaded


def published() -> list[Pretrained]:
    """Every set of torchvision weights the zoo's models take, for the docs' table."""
    rows = []
    for name in TORCHVISION_SHAPED:
        arguments = {"variant": "torchvision"} if name == "alexnet" else {}
        tv_name = torchvision_name(name, arguments) or name
        for member in weights_enum(tv_name):
            if member.meta.get("categories"):
                rows.append(resolve(MODELS, name, member.name, **arguments))
    return rows


def trained() -> list[Pretrained]:
    """Every set of the zoo's own weights this installation has a card for, for the listing."""
    cards = trained_weights.read_cards()
    return [
        resolve(MODELS, weight_set.model, weight_set.name)
        for weight_set in trained_weights.WEIGHT_SETS
        if weight_set.key in cards
    ]
