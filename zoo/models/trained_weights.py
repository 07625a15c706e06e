"""The zoo's own trained weights: LeNet-5, an adversarially trained LeNet-5 and U-Net, trained by
the zoo's recipes on the real MNIST and shipped inside the package, so that they load offline at
once. They are chosen by name as torchvision's are (``model.weights=MNIST_V1``,
``models.build("lenet", weights="DEFAULT")``): ``zoo.models.weights`` resolves both kinds.

>>> from zoo import models
>>> net = models.build("lenet", weights="MNIST_ROBUST_V1")  # doctest: +SKIP
>>> models.pretrained("unet", "DEFAULT").meta["_metrics"]  # doctest: +SKIP

Each set is two things in ``zoo/models/trained/``:

- ``<model>_<name>-<sha256 prefix>.safetensors``: the network's tensors in safetensors, a JSON
  header and raw bytes, read by safetensors' own loader (no pickle: nothing in it can run). Its
  sha256 is checked against the prefix in its name at every load, and its header (names, shapes,
  dtypes) against the network before any tensor is read;
- its model card, an entry of ``cards.json``: the fields torchvision's ``Weights.meta`` carries
  (``num_params``, ``_ops``, ``_file_size``, ``min_size``, ``categories``, ``recipe``,
  ``_metrics``, ``_docs``), the constructor arguments the weights need, and the data config
  they were trained and measured on.

:data:`WEIGHT_SETS` is what the zoo knows before anything is trained: each set's name, model,
recipe and what its card measures. ``python -m zoo.tools.weights export`` writes a set's file
and card from a training checkpoint; ``python -m zoo.tools.weights card`` measures its
``_metrics`` with evaluate.py on the shipped file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from zoo.core.files import file_digest, write_json
from zoo.core.schema import Schema, option
from zoo.models.loading import SizeLimit, WeightsError

# Inside the package, so that an installed zoo has them too.
TRAINED_DIR = Path(__file__).resolve().parent / "trained"
CARDS_FILE = "cards.json"
SUFFIX = ".safetensors"
PREFIX_LENGTH = 8  # hex digits of the sha256 in a file's name, as torch.hub's names carry
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# safetensors' dtype names, with their sizes in bytes, and those torch holds as floating point.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
FLOAT_DTYPES = frozenset({"F8_E4M3", "F8_E5M2", "F16", "BF16", "F32", "F64"})

# The budgets every classifier's card reports FGSM and PGD accuracy at (pixel units).
ATTACK_BUDGETS = (0.1, 0.3)
_EPS = f"attack.eps=[{','.join(f'{eps:g}' for eps in ATTACK_BUDGETS)}]"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One evaluate.py run behind a card's ``_metrics``: its overrides (beside ``model=``,
    ``model.weights=`` and the measuring settings of zoo.tools.weights) and, for an attack, the
    report whose accuracy per eps the card takes, as ``<label>@eps<eps>``."""

    label: str
    overrides: tuple[str, ...] = ()
    attack: str | None = None


CLEAN = Measurement("clean")
FGSM = Measurement("fgsm", ("attack=fgsm", _EPS), attack="fgsm")
PGD20 = Measurement("pgd20", ("attack=pgd", _EPS, "attack.steps=20"), attack="pgd")
# The robustness literature's strength (Madry et al.'s MNIST challenge: PGD-100, restarts): an
# image counts as robust only if it survives every restart.
PGD100X10 = Measurement(
    "pgd100x10", ("attack=pgd", _EPS, "attack.steps=100", "attack.restarts=10"), attack="pgd"
)


@dataclasses.dataclass(frozen=True)
class WeightSet:
    """One of the zoo's own sets of weights, as the zoo knows it before it is trained."""

    model: str  # the registry name
    name: str  # the weights name, in torchvision's style: MNIST_V1
    recipe: str  # the command that trains it, from the checkout
    dataset: str  # the data config it is trained and measured on
    measurements: tuple[Measurement, ...]
    default: bool = False  # what model.weights=DEFAULT picks for the model

    @property
    def key(self) -> str:
        """Its entry in cards.json."""
        return f"{self.model}.{self.name}"

    @property
    def stem(self) -> str:
        """Its file's name before the digest: lenet_mnist_v1."""
        return f"{self.model}_{self.name.lower()}"

    @property
    def description(self) -> str:
        return f"{self.model} {self.name}"


WEIGHT_SETS: tuple[WeightSet, ...] = (
    WeightSet("lenet", "MNIST_V1", "python train.py", "mnist", (FGSM, PGD20), default=True),
    WeightSet(
        "lenet",
        "MNIST_ROBUST_V1",
        "python train.py experiment=lenet_mnist_robust",
        "mnist",
        (FGSM, PGD20, PGD100X10),
    ),
    WeightSet(
        "unet",
        "MNIST_SEGMENTATION_V1",
        "python train.py experiment=unet_mnist",
        "mnist_segmentation",
        (CLEAN,),
        default=True,
    ),
)


def weight_sets(model: str) -> list[WeightSet]:
    """The zoo's own sets for the registry model ``model`` (none for most)."""
    return [weight_set for weight_set in WEIGHT_SETS if weight_set.model == model]


def find(model: str, name: str) -> WeightSet | None:
    """The set ``name`` of ``model``; ``DEFAULT`` is its default set. None if it has no such."""
    for weight_set in weight_sets(model):
        if weight_set.name == name or (name == "DEFAULT" and weight_set.default):
            return weight_set
    return None


@dataclasses.dataclass
class Recipe(Schema):
    """How the weights were made: the command, run from the checkout at the commit."""

    command: str = option()
    commit: str = option()


def _sha256(value: Any) -> bool:
    return isinstance(value, str) and SHA256.match(value) is not None


@dataclasses.dataclass
class ModelCard(Schema):
    """A set's entry in cards.json. The fields torchvision's ``Weights.meta`` carries, with its
    units: ``_ops`` in GFLOPs per image as torchvision counts them (one multiply-add, one op:
    ``zoo.tools.summary``'s MACs), ``_file_size`` in MB (2^20 bytes), ``min_size`` (H, W),
    ``_metrics`` in percent on the dataset's test split, keyed by the data config's name."""

    title: ClassVar[str] = "a model card"

    model: str = option()
    name: str = option()
    file: str = option()
    sha256: str = option(valid=_sha256, what="64 lowercase hex digits")
    # The constructor arguments of the network the weights were trained in.
    arguments: dict[str, Any] = option()
    # The data config they were trained and measured on (without this machine's paths): what
    # evaluate.py evaluates them on when no data= is given.
    data: dict[str, Any] = option()
    # What the datamodule does to an image, for the record: size, resize, mean and std.
    preprocessing: dict[str, Any] = option()
    num_params: int = option(ge=1)
    _ops: float = option(ge=0)
    _file_size: float = option(ge=0)
    min_size: list[int] = option()
    categories: list[str] = option()
    recipe: Recipe = option()
    _docs: str = option()
    # Filled by measuring the shipped file (zoo.tools.weights card), empty until then.
    _metrics: dict[str, dict[str, float]] = option(default_factory=dict)
    # The evaluate.py commands that measured _metrics.
    _evaluation: list[str] = option(default_factory=list)

    def check(self, key: str) -> None:
        weight_set = find(self.model, self.name)
        if weight_set is None or weight_set.name != self.name:
            raise WeightsError(f"{key}: {self.model} {self.name} is not one of the zoo's sets")
        expected = file_name(weight_set, self.sha256)
        if self.file != expected:
            raise WeightsError(
                f"{key}: its file is {self.file!r}, where its name and sha256 make {expected!r}"
            )
        if len(self.categories) != self.arguments.get("num_classes"):
            raise WeightsError(
                f"{key}: {len(self.categories)} categories for num_classes="
                f"{self.arguments.get('num_classes')}"
            )


def file_name(weight_set: WeightSet, sha256: str) -> str:
    """The file a set's tensors are shipped in: ``<model>_<name>-<sha256 prefix>.safetensors``."""
    return f"{weight_set.stem}-{sha256[:PREFIX_LENGTH]}{SUFFIX}"


def cards_path(directory: Path | None = None) -> Path:
    return (directory or TRAINED_DIR) / CARDS_FILE


def read_cards(directory: Path | None = None) -> dict[str, ModelCard]:
    """Every card in ``directory`` (default: the package's), checked; {} before any is shipped.
    A card that does not parse is a WeightsError naming cards.json and the entry."""
    path = cards_path(directory)
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(f"{path} is not a readable JSON file of model cards: {err}") from err
    if not isinstance(raw, dict):
        raise WeightsError(f"{path} holds a {type(raw).__name__}, not cards by set name")
    cards = {}
    for key, entry in raw.items():
        card = ModelCard.parse(entry, f"{path} [{key}]")
        if key != f"{card.model}.{card.name}":
            raise WeightsError(f"{path} [{key}] is the card of {card.model}.{card.name}")
        cards[key] = card
    return cards


def card_of(weight_set: WeightSet, directory: Path | None = None) -> ModelCard:
    """The card of ``weight_set``; WeightsError if this installation has none."""
    card = read_cards(directory).get(weight_set.key)
    if card is None:
        raise WeightsError(
            f"model.weights={weight_set.name}: the zoo's {weight_set.description} weights are "
            f"not in this installation ({cards_path(directory)} has no card for them)"
        )
    return card


def write_cards(cards: Mapping[str, ModelCard], directory: Path | None = None) -> Path:
    """cards.json with ``cards``, sorted and indented for review, replaced atomically."""
    path = cards_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    write_json(staging, {key: cards[key].to_dict() for key in sorted(cards)})
    os.replace(staging, path)
    return path


def save_weights(
    tensors: Mapping[str, torch.Tensor], weight_set: WeightSet, directory: Path | None = None
) -> Path:
    """``tensors`` as the set's safetensors file in ``directory``, named by its sha256; the path.
    The same tensors give the same bytes, so the same name."""
    directory = directory or TRAINED_DIR
    directory.mkdir(parents=True, exist_ok=True)
    staging = directory / f".{weight_set.stem}{SUFFIX}.partial"
    plain = {key: tensor.detach().cpu().contiguous() for key, tensor in tensors.items()}
    save_file(plain, str(staging), metadata={"model": weight_set.model, "name": weight_set.name})
    path = directory / file_name(weight_set, file_digest(staging, "sha256"))
    staging.chmod(0o644)  # safetensors writes 0600; a shipped file is everyone's to read
    os.replace(staging, path)
    return path


def read_safetensors(
    path: Path, limit: SizeLimit, expected: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, read by safetensors' own loader once its
    header has been checked: its tensors together no larger than ``limit`` (what the model they
    go into can need), and, where ``expected`` gives the network's state_dict (real or on the
    meta device), the same names, the same kind of dtype and the same shapes. Each refusal is
    one WeightsError naming the file.

    safetensors itself refuses a header over 100 MB and offsets that do not tile the file, so
    no tensor claims bytes the file does not hold; nothing is copied before these checks."""
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            header = {}
            for key in file.keys():  # noqa: SIM118 (safe_open is not iterable)
                part = file.get_slice(key)
                header[key] = (part.get_dtype(), tuple(part.get_shape()))
            check_header(path, header, limit, expected)
            return {key: file.get_tensor(key) for key in header}
    except (SafetensorError, OSError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(
            f"{path} is not a readable safetensors file (truncated or corrupt?): {detail}"
        ) from err


def check_header(
    path: Path,
    header: Mapping[str, tuple[str, tuple[int, ...]]],
    limit: SizeLimit,
    expected: Mapping[str, torch.Tensor] | None,
) -> None:
    """WeightsError unless the tensors a safetensors ``header`` describes (dtype name, shape)
    fit in ``limit`` and, given ``expected``, are the ones it names."""
    unknown = sorted({dtype for dtype, _ in header.values()} - set(DTYPE_BYTES))
    if unknown:
        raise WeightsError(f"{path}: tensors of dtypes {unknown}, which no zoo network holds")
    total = sum(DTYPE_BYTES[dtype] * math.prod(shape) for dtype, shape in header.values())
    if total > limit.bytes:
        raise WeightsError(
            f"refusing {path}: its tensors take {total:,} bytes, more than {limit}: a damaged "
            "or foreign file"
        )
    if expected is None:
        return  # the strict load names what does not fit
    missing = sorted(set(expected) - set(header))
    unexpected = sorted(set(header) - set(expected))
    if missing or unexpected:
        problems = [
            f"{label} {names[:5]}{' ...' if len(names) > 5 else ''}"
            for label, names in (("missing", missing), ("unexpected", unexpected))
            if names
        ]
        raise WeightsError(f"{path}: its tensors do not fit the network: {'; '.join(problems)}")
    for key, (dtype, shape) in header.items():
        want = expected[key]
        if (dtype in FLOAT_DTYPES) != want.is_floating_point():
            raise WeightsError(
                f"{path}: weight {key!r} is {dtype}, where the network holds {want.dtype}: a "
                "damaged or foreign file"
            )
        if shape != tuple(want.shape):
            raise WeightsError(
                f"{path}: weight {key!r} has shape {list(shape)}, where the network's is "
                f"{list(want.shape)}"
            )
