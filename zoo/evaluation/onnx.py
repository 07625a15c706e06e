"""ONNX export, checked against PyTorch with onnxruntime.

torch 2.9+ exports through ``torch.export`` (``dynamo=True``, its default), which needs
onnxscript; onnx, onnxruntime and onnxscript are the ``[onnx]`` extra of pyproject.toml.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo.core.errors import ConfigError
from zoo.evaluation.outputs import check_output_file

log = logging.getLogger(__name__)

ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
# A protobuf file holds at most 2 GiB; heavier weights go to a .data file beside it.
_PROTOBUF_LIMIT = 2**31 - 2**26


@contextmanager
def _quiet(*names: str) -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def require_onnx() -> None:
    """ConfigError naming what to install when an [onnx] package is missing."""
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"export=onnx needs {', '.join(missing)}, which is not installed: "
            "pip install -e '.[onnx]'"
        )


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    path: Path,
    atol: float = 1e-4,
    rtol: float = 1e-3,
) -> dict[str, Any]:
    """Write ``model`` (CPU, eval) to ``path`` with a dynamic batch axis, then compare
    onnxruntime's outputs with PyTorch's on a batch of another size."""
    require_onnx()
    check_output_file(path, "the ONNX model")  # before the export's minutes, not after
    import onnxruntime

    model = model.cpu().eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, *input_shape, generator=generator)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > _PROTOBUF_LIMIT
    path.parent.mkdir(parents=True, exist_ok=True)
    if large:
        check_output_file(path.with_name(path.name + ".data"), "the ONNX weights")
    with _quiet("onnxscript", "onnx_ir"):  # dozens of INFO lines per graph pass otherwise
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=large,
            verbose=False,
        )
    check = torch.randn(5, *input_shape, generator=generator)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(["logits"], {"images": check.numpy()})
    with torch.inference_mode():
        torch_out = model(check).numpy()
    max_diff = float(np.abs(onnx_out - torch_out).max())
    if not np.allclose(onnx_out, torch_out, atol=atol, rtol=rtol):
        raise RuntimeError(
            f"{path}: onnxruntime's outputs differ from PyTorch's by up to {max_diff:.3g}"
        )
    log.info("wrote %s; onnxruntime matches PyTorch to %.1e", path, max_diff)
    return {"path": str(path), "max_abs_diff": max_diff, "checked_batch": len(check)}
