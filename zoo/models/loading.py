"""Reading weights from untrusted files: ``torch.load(weights_only=True)`` and nothing else, then
checks that the tensors fit the model before any of them is used.

A ``.ckpt`` or ``.pth`` is a pickle, and unpickling can run any code. The weights-only unpickler
admits only tensors and plain containers, and it is never retried with ``weights_only=False``
(timm's ``_torch_load`` is the model). Used by evaluation (checkpoints), training
(``ckpt_path=``), ``model.weights`` files and ``attack.load`` perturbations alike.

Before torch reads a zip-format file, the sizes its members declare are checked against its zip
directory (``ZipInfo.file_size``, nothing unpacked): torch reads members stored compressed,
though ``torch.save`` never writes one, and a 3 MB file can then unpack to gigabytes before any
other check runs. No file may unpack to more than it holds on disk, and, where the reader knows
what the file must fit (a model, a perturbation's shape), to more than that can hold
(:class:`SizeLimit`).
"""

from __future__ import annotations

import itertools
import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.filesize import decimal

from zoo.core.errors import ConfigError
from zoo.core.files import path_problem
from zoo.models.base import ZooModel

_MAX_DETAIL = 300
# A zoo checkpoint holds the network's weights, Adam's two moments of each and, beside an
# average (callbacks=ema), the raw weights: four copies, which float64 doubles.
COPIES = 8
# What a file holds besides those tensors: the pickle of hyper-parameters, loop and callback
# states, step counters.
ALLOWANCE = 16_000_000


class WeightsError(ConfigError):
    """A weights or checkpoint file that is missing, unreadable, hostile, or does not fit."""


@dataclass(frozen=True)
class SizeLimit:
    """The most a file may unpack to, for a reader that knows what the file must fit: room for
    :data:`COPIES` copies of the ``held`` bytes that ``holder`` needs, and the
    :data:`ALLOWANCE` for the rest."""

    holder: str  # "LeNet-5's weights", "a (1, 28, 28) float32 tensor"
    held: int

    @property
    def bytes(self) -> int:
        return COPIES * self.held + ALLOWANCE

    def __str__(self) -> str:
        return (
            f"the {decimal(self.bytes)} that a file for {self.holder} can need "
            f"({COPIES} x {decimal(self.held)} + {decimal(ALLOWANCE)})"
        )

    @classmethod
    def of_model(cls, model: ZooModel) -> SizeLimit:
        """What a weights file or checkpoint of ``model`` can need: its parameters and buffers,
        counted on any device, the meta device included."""
        tensors = itertools.chain(model.parameters(), model.buffers())
        held = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
        return cls(f"{model.display_name}'s weights", held)

    @classmethod
    def of_tensor(cls, shape: Sequence[int]) -> SizeLimit:
        """What a file of one float32 tensor of ``shape`` can need."""
        return cls(f"a {tuple(shape)} float32 tensor", math.prod(shape) * 4)


def safe_load(path: Path, what: str = "checkpoint", limit: SizeLimit | None = None) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, each way of failing one clear line
    (WeightsError). ``what`` names the kind of file in the messages; ``limit``, where the caller
    knows what the file must fit, bounds what it may unpack to (``check_integrity``).

    A zip-format file (what ``torch.save`` writes since torch 1.6) has its members' declared
    sizes and then each member's CRC-32 checked first (``check_integrity``). A legacy (pre-1.6,
    non-zip) file holds no checksums: it is read as it is, its integrity resting on the digest of
    a published file, where there is one.
    """
    problem = path_problem(path, "file")
    if problem is not None:
        # A FIFO is never opened: reading one waits for a writer that may never come.
        raise WeightsError(f"{what} {path} {problem}")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} {path} is empty")
    check_integrity(path, what, limit)
    try:
        with warnings.catch_warnings():
            # e.g. "Detected pickle protocol 4": noise next to the one line that matters.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The weights-only unpickler stopped before creating any object the file asked for.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        reason = (
            f"it holds pickled code (it would call {found.group(1)})"
            if found
            else f"the weights-only loader rejects it ({_last_line(err)})"
        )
        raise WeightsError(
            f"refusing to load {path}: {reason}, which a file of weights never needs; "
            "nothing from the file was run"
        ) from err
    except Exception as err:  # zip, EOF, pickle-opcode errors: all mean "not a weights file"
        raise unreadable(path, what, err) from err


def check_integrity(path: Path, what: str = "checkpoint", limit: SizeLimit | None = None) -> None:
    """WeightsError if ``path`` would unpack to more than it holds or than ``limit``
    (:func:`check_unpacked_size`), or naming the first zip member whose CRC-32 (or header) is
    wrong.

    torch's zip reader never checks the CRCs it stores: a file with one flipped bit in a tensor
    loads and evaluates to a plausible, wrong figure. ``ZipFile.testzip`` streams every member
    through its CRC in 1 MiB chunks, so a large file is read once more but never held twice; the
    sizes are checked before it, from the zip directory alone. A file that is not a zip (legacy
    format, or garbage) has only its size on disk checked, and is left to ``torch.load`` to judge.
    """
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        # Not a zip (or its directory is unreadable): a legacy file stores its tensors as they
        # are, so its size on disk is what it unpacks to; torch.load judges the rest.
        check_unpacked_size(path, None, limit)
        return
    except Exception as err:  # a damaged directory: OS and EOF errors
        raise unreadable(path, what, err) from err
    with archive:
        check_unpacked_size(path, archive.infolist(), limit)
        try:
            bad = archive.testzip()
        except Exception as err:  # truncated or damaged compressed data: zlib, EOF, OS errors
            raise unreadable(path, what, err) from err
    if bad is not None:
        raise WeightsError(
            f"{path} is damaged: its member {bad!r} fails its CRC-32 check (a flipped bit, "
            f"a bad copy or disk); fetch or copy the {what} again"
        )


def unreadable(path: Path, what: str, err: BaseException) -> WeightsError:
    """The refusal of a file that is no readable PyTorch ``what``, ``err`` being why."""
    return WeightsError(
        f"{path} is not a readable PyTorch {what} (truncated or corrupt?): "
        f"{type(err).__name__}: {_first_line(err)}"
    )


def check_unpacked_size(
    path: Path, members: Sequence[zipfile.ZipInfo] | None, limit: SizeLimit | None
) -> None:
    """WeightsError, before anything is unpacked, where the zip ``members`` of ``path`` declare
    more bytes than the file holds (a member stored compressed, which ``torch.save`` never
    writes, or a forged size), or where the file (``members`` None: a legacy file, read as it
    is) would unpack to more than ``limit``."""
    on_disk = path.stat().st_size
    unpacked = on_disk if members is None else sum(member.file_size for member in members)
    if members and unpacked > on_disk:
        worst = max(members, key=lambda member: member.file_size - member.compress_size)
        how = (
            f"{worst.filename!r} alone to {decimal(worst.file_size)}, stored compressed, which "
            "torch.save never does"
            if worst.compress_type != zipfile.ZIP_STORED
            else "its sizes are forged"
        )
        raise WeightsError(
            f"refusing {path}: its members unpack to {decimal(unpacked)} from "
            f"{decimal(on_disk)} on disk ({how}); nothing was unpacked"
        )
    if limit is not None and unpacked > limit.bytes:
        raise WeightsError(
            f"refusing {path}: it unpacks to {decimal(unpacked)}, more than {limit}; "
            "nothing was unpacked"
        )


def check_values(model: ZooModel, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """WeightsError for a tensor whose kind differs from the model's (integer, bool or complex
    where it holds floats, or the reverse) or that holds NaN or infinity: such weights would load
    and evaluate to a plausible, wrong figure. A float64 copy of float32 weights is cast."""
    expected = model.state_dict()
    for key, tensor in weights.items():
        want = expected.get(key)
        if want is None:
            continue  # an unexpected key: load_weights names it
        same_kind = tensor.is_floating_point() == want.is_floating_point() and not (
            tensor.is_complex() or tensor.dtype == torch.bool
        )
        if not same_kind:
            raise WeightsError(
                f"{path}: weight {key!r} is {tensor.dtype}, where {model.display_name} holds "
                f"{want.dtype}: a damaged or foreign file"
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise WeightsError(
                f"{path}: weight {key!r} holds NaN or infinite values: a damaged file"
            )


def load_weights(model: ZooModel, weights: Mapping[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)``, its errors condensed to one line."""
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        # torch lists every problem on its own tab-indented line after a header.
        problems = "; ".join(line.strip() for line in str(err).splitlines()[1:] if line.strip())
        if len(problems) > _MAX_DETAIL:
            problems = problems[:_MAX_DETAIL] + " ..."
        raise WeightsError(
            f"{path}: its weights do not fit {model.display_name}: {problems}"
        ) from err


def _first_line(err: BaseException) -> str:
    """The first sentence of an error message (torch's run on with advice)."""
    text = str(err).strip()
    return text.splitlines()[0].split(". ")[0][:_MAX_DETAIL] if text else "(no message)"


def _last_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    useful = [line for line in lines if "WeightsUnpickler error" in line or "Unsupported" in line]
    return (useful or lines or ["refused by the weights-only unpickler"])[-1][:_MAX_DETAIL]
