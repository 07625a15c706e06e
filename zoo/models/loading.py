"""Reading weights from untrusted files: ``torch.load(weights_only=True)`` and nothing else, then
checks that the tensors fit the model before any of them is used.

A ``.ckpt`` or ``.pth`` is a pickle, and unpickling can run any code. The weights-only unpickler
admits only tensors and plain containers, and it is never retried with ``weights_only=False``
(timm's ``_torch_load`` is the model). Used by evaluation (checkpoints), training
(``ckpt_path=``) and ``model.weights`` files alike.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from zoo.core.errors import ConfigError
from zoo.models.base import ZooModel

_MAX_DETAIL = 300


class WeightsError(ConfigError):
    """A weights or checkpoint file that is missing, unreadable, hostile, or does not fit."""


def safe_load(path: Path, what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, each way of failing one clear line
    (WeightsError). ``what`` names the kind of file in the messages.

    A zip-format file (what ``torch.save`` writes since torch 1.6) has each member's CRC-32
    checked first (``check_integrity``). A legacy (pre-1.6, non-zip) file holds no checksums: it
    is read as it is, its integrity resting on the digest of a published file, where there is one.
    """
    if not path.exists():
        raise WeightsError(f"{what} {path} does not exist")
    if not path.is_file():
        raise WeightsError(f"{what} {path} is not a file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{what} {path} is empty")
    check_integrity(path, what)
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
        raise WeightsError(
            f"{path} is not a readable PyTorch {what} (truncated or corrupt?): "
            f"{type(err).__name__}: {_first_line(err)}"
        ) from err


def check_integrity(path: Path, what: str = "checkpoint") -> None:
    """WeightsError naming the first zip member of ``path`` whose CRC-32 (or header) is wrong.

    torch's zip reader never checks the CRCs it stores: a file with one flipped bit in a tensor
    loads and evaluates to a plausible, wrong figure. ``ZipFile.testzip`` streams every member
    through its CRC in 1 MiB chunks, so a large file is read once more but never held twice.
    A file that is not a zip (legacy format, or garbage) is left to ``torch.load`` to judge.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        return  # not a zip (or its directory is unreadable): torch.load gives the reason
    except Exception as err:  # truncated or damaged compressed data: zlib, EOF, OS errors
        raise WeightsError(
            f"{path} is not a readable PyTorch {what} (truncated or corrupt?): "
            f"{type(err).__name__}: {_first_line(err)}"
        ) from err
    if bad is not None:
        raise WeightsError(
            f"{path} is damaged: its member {bad!r} fails its CRC-32 check (a flipped bit, "
            f"a bad copy or disk); fetch or copy the {what} again"
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
