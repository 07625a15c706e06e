"""The lecture's "Structural Details" table for any model: one row per layer with its shapes,
kernel, stride, padding, parameters, MACs, receptive field and jump.

    python -m zoo.tools.summary alexnet                    # native input, 3x227x227
    python -m zoo.tools.summary vgg16 --input 3x224x224
    python -m zoo.tools.summary alexnet --arg variant=torchvision --num-classes 10

Shapes, parameter counts and MACs (multiply-accumulates) come from torchinfo; receptive fields
and jumps from the hand-written tracker in :mod:`zoo.tools.receptive_field` (its docstring has
the conventions), run in the same forward pass. This module assembles the rows and holds the
command line; :mod:`zoo.tools.summary_render` prints them.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torchinfo
from torch import nn

from zoo.tools.receptive_field import Call, ReceptiveField, receptive_fields, trace
from zoo.tools.summary_render import render

__all__ = [
    "LayerRow",
    "ModelSummary",
    "ReceptiveField",
    "main",
    "receptive_fields",
    "render",
    "summarize",
]


@dataclass
class LayerRow:
    """One row of the table: a leaf module call (with the element-wise layers folded into it)
    or a merge of branches (``kind`` "add", "cat", ...)."""

    name: str
    kind: str
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...]
    kernel: tuple[int, ...] | None
    stride: tuple[int, ...] | None
    padding: tuple[int, ...] | str | None
    params: int
    macs: int
    rf: ReceptiveField
    folded: list[str] = field(default_factory=list)


@dataclass
class ModelSummary:
    """The rows plus torchinfo's totals (which also count layers the forward pass skipped, such
    as GoogLeNet's auxiliary classifiers in eval mode)."""

    model_name: str
    input_size: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_macs: int


# Folded into the row they follow: they change neither the shape nor the rf, and the lecture's
# table lists a convolution with its nonlinearity as one layer.
_ELEMENTWISE = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
    nn.Sigmoid,
    nn.modules.dropout._DropoutNd,
    nn.Identity,
    nn.modules.batchnorm._BatchNorm,
)


def _torchinfo_summary(model: nn.Module, x: torch.Tensor) -> torchinfo.ModelStatistics:
    try:
        return torchinfo.summary(model, input_data=x, verbose=0, mode="eval")
    except RuntimeError as err:
        # torchinfo wraps the model's own error; the model's message is the useful one.
        cause = err.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        if cause is not None:
            raise RuntimeError(
                f"{type(model).__name__} failed on input {tuple(x.shape[1:])}: {cause}"
            ) from cause
        raise
    finally:
        # torchinfo caches every summary by class name, which would keep the model alive.
        torchinfo.torchinfo.clear_cached_forward_pass()


def _is_foldable(call: Call) -> bool:
    return isinstance(call.module, _ELEMENTWISE) and call.in_shape == call.out_shape


def _geometry(module: nn.Module | None, spatial_dims: int) -> tuple[Any, Any, Any]:
    if module is None or not hasattr(module, "kernel_size"):
        return None, None, None
    kernel = module.kernel_size
    stride = getattr(module, "stride", None)
    stride = kernel if stride is None else stride  # nn.MaxPool2d(3) means stride 3
    padding = getattr(module, "padding", None)

    def as_tuple(v: Any) -> Any:
        if v is None or isinstance(v, str):  # padding="same"
            return v
        # Pools store kernel_size=2 for (2, 2).
        return tuple(v) if isinstance(v, tuple | list) else (v,) * spatial_dims

    return as_tuple(kernel), as_tuple(stride), as_tuple(padding)


def summarize(model: nn.Module, input_size: Sequence[int], fold: bool = True) -> ModelSummary:
    """Summarise ``model`` on a zero image of ``input_size`` = (C, H, W), batch 1.

    With ``fold``, parameter-free or per-channel element-wise layers (activations, dropout,
    batch norm, identity) that directly follow a row are folded into it ("Conv2d+BatchNorm2d+
    ReLU"), adding their parameters and MACs, like the lecture's table; with ``fold=False`` every
    leaf module call is a row. Runs on the model's device; a model built under
    ``torch.device("meta")`` is summarised without computing anything.
    """
    # One pass: torchinfo counts while the tracker follows the receptive fields.
    tracker, stats = trace(model, input_size, _torchinfo_summary)
    infos: dict[tuple[int, int], Any] = {}
    seen: dict[int, int] = {}
    for info in stats.summary_list:
        if info.executed and info.is_leaf_layer:
            n = seen.get(info.layer_id, 0)
            seen[info.layer_id] = n + 1
            infos[(info.layer_id, n)] = info

    total_macs = stats.total_mult_adds
    rows: list[LayerRow] = []
    row_tag: int | None = None  # the call whose output the last row ends with
    for index, call in enumerate(tracker.calls):
        module = call.module
        info = infos.get((id(module), call.occurrence)) if module is not None else None
        params = 0 if info is None or info.is_recursive else info.num_params
        macs = info.macs if info is not None else 0
        if isinstance(module, nn.modules.conv._ConvTransposeNd) and info is not None:
            # torchinfo counts a transposed conv like a conv over its *output*, stride**2 times
            # too much; each input position meets each weight once (as fixed in thop#93).
            assert call.in_shape is not None
            fixed = module.weight.numel() * math.prod(call.in_shape[1:])
            if module.bias is not None:
                fixed += module.bias.numel() * math.prod(call.out_shape[1:])
            total_macs += fixed - macs
            macs = fixed
        if fold and rows and _is_foldable(call) and call.in_tag == row_tag and row_tag is not None:
            row = rows[-1]
            row.kind += f"+{call.kind}"
            row.folded.append(call.name)
            row.params += params
            row.macs += macs
            row.output_shape = call.out_shape
            row.rf = call.rf
            row_tag = index
            continue
        spatial_dims = max(len(call.in_shape or ()) - 1, 1)
        kernel, stride, padding = _geometry(module, spatial_dims)
        rows.append(
            LayerRow(
                name=call.label,
                kind=call.kind,
                input_shape=call.in_shape,
                output_shape=call.out_shape,
                kernel=kernel,
                stride=stride,
                padding=padding,
                params=params,
                macs=macs,
                rf=call.rf,
            )
        )
        row_tag = index
    return ModelSummary(
        model_name=type(model).__name__,
        input_size=tuple(int(n) for n in input_size),  # validated by trace
        rows=rows,
        total_params=stats.total_params,
        trainable_params=stats.trainable_params,
        total_macs=total_macs,
    )


# --- the command line ---------------------------------------------------------------------------


def _parse_input(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"--input must be CxHxW with positive integers, e.g. 3x224x224; got {text!r}"
        )
    c, h, w = (int(p) for p in parts)
    return c, h, w


def _parse_arg(text: str) -> tuple[str, object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise ValueError(f"--arg must be key=value, e.g. variant=original; got {text!r}")
    try:
        value: object = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw  # a bare word: variant=torchvision
    return key.strip(), value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zoo-summary",
        description="Print a model's layer table: shapes, kernel, stride, padding, parameters, "
        "MACs, receptive field and jump.",
    )
    parser.add_argument("model", help="registry name, e.g. alexnet, vgg16, resnet18")
    parser.add_argument(
        "--input", metavar="CxHxW", help="input size (default: the model's native input)"
    )
    parser.add_argument("--num-classes", type=int, metavar="N", help="number of classes")
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra builder argument, repeatable (e.g. --arg variant=torchvision)",
    )
    parser.add_argument("--all", action="store_true", help="one row per leaf module: fold nothing")
    return parser


def _run(args: argparse.Namespace) -> None:
    from zoo import models

    kwargs = dict(_parse_arg(a) for a in args.arg)
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    input_size = _parse_input(args.input) if args.input else None
    if input_size is not None:
        kwargs.setdefault("in_channels", input_size[0])
    # On the meta device nothing is allocated or computed: VGG16 is summarised in milliseconds.
    with torch.device("meta"):
        model = models.build(args.model, **kwargs)
    if input_size is None:
        input_size = (model.in_channels, *model.native_input_size)
    render(summarize(model, input_size, fold=not args.all))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``zoo-summary`` / ``python -m zoo.tools.summary``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _run(args)
    except (ValueError, RuntimeError) as err:
        # User errors (unknown model, bad size, bad argument) deserve a line, not a traceback.
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
