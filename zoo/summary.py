"""The lecture's "Structural Details" table for any model: one row per layer with its shapes,
kernel, stride, padding, parameters, MACs, receptive field and jump.

    python -m zoo.summary alexnet                    # native input, 3x227x227
    python -m zoo.summary vgg16 --input 3x224x224
    python -m zoo.summary alexnet --arg variant=torchvision --num-classes 10

Shapes, parameter counts and MACs (multiply-accumulates) come from torchinfo. No library tracks
receptive fields, so that part is written here by hand (``_Tracker``): every tensor carries the
receptive field size (``rf``, in input pixels) and the jump (distance in input pixels between
neighbouring positions, i.e. the cumulative stride) of its positions.

Conventions:

* A tensor not produced inside the forward pass (the input image) has rf 1 and jump 1.
* Convolutions and pools: ``rf_out = rf_in + (k - 1) * dilation * jump_in`` and
  ``jump_out = jump_in * stride``. Padding shifts the window but does not change its size.
* Transposed convolutions: an output position sees ``ceil(k_eff / stride)`` input positions, so
  ``rf_out = rf_in + (ceil(k_eff / stride) - 1) * jump_in`` and ``jump_out = jump_in / stride``.
* ``nn.Upsample``: nearest keeps the rf, (bi)linear adds one input step, bicubic three; the jump
  is divided by the scale.
* Every other op (activations, normalisation, dropout, flatten, crops, ...) passes the rf on.
  Ops with several inputs (``torch.cat`` in Inception and U-Net, the residual ``+``/``+=``)
  take the maximum rf and jump over their inputs.
* Adaptive pools: an integral ratio ``in / out`` is an ordinary pool with kernel = stride = ratio
  (so the 6x6 adaptive pool of AlexNet at its native size is the identity); an output of 1x1
  (global pooling) makes the rf "global"; other ratios use the widest window and the mean step,
  an upper bound. ``nn.Linear`` is "global" too. "global" (``None`` in the API) means every
  output sees the whole image and the jump no longer means anything.
* The theoretical rf is not clipped to the image: ResNet18's last convolution sees 435 px of a
  224 px image, most of it padding.
* Kernels and strides are assumed square; for a non-square layer the height axis is tracked and
  a warning is issued.
"""

from __future__ import annotations

import argparse
import ast
import math
import sys
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple

import torch
import torchinfo
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "LayerRow",
    "ModelSummary",
    "ReceptiveField",
    "main",
    "receptive_fields",
    "render",
    "summarize",
]


class ReceptiveField(NamedTuple):
    """Receptive field size and jump of a layer's output, in input pixels (``None``: global)."""

    size: int | float | None
    jump: int | float | None

    @property
    def is_global(self) -> bool:
        return self.size is None


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


# --- receptive field tracking (hand-written: no library does it) ---------------------------------


class _Geom(NamedTuple):
    rf: Fraction
    jump: Fraction


# Fractions, so that upsampling (jump / 2) back to the input resolution stays exact.
_INPUT = _Geom(Fraction(1), Fraction(1))
_GLOBAL = None  # every output position sees the whole image

Geom = _Geom | None


def _merge(geoms: Sequence[Geom]) -> Geom:
    if any(g is _GLOBAL for g in geoms):
        return _GLOBAL
    return _Geom(max(g.rf for g in geoms), max(g.jump for g in geoms))  # type: ignore[union-attr]


def _number(x: Fraction) -> int | float:
    return int(x) if x.denominator == 1 else float(x)


def _public(geom: Geom) -> ReceptiveField:
    if geom is _GLOBAL:
        return ReceptiveField(None, None)
    return ReceptiveField(_number(geom.rf), _number(geom.jump))


def _grow(g: _Geom, steps: int, stride: Fraction | int) -> _Geom:
    """The window grows by ``steps`` positions of the input grid; the grid scales by stride."""
    return _Geom(g.rf + steps * g.jump, g.jump * stride)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, tuple | list) else value


def _square(value: Any) -> bool:
    return not isinstance(value, tuple | list) or len(set(value)) <= 1


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

_SPATIAL = (
    nn.modules.conv._ConvNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.Upsample,
    nn.Linear,
)


# Functional forms of the layers that change the receptive field: called from anywhere but
# their own module, the tracker cannot see their geometry and warns.
_GEOMETRIC_FUNCTIONS = {
    *(f"conv{n}d" for n in (1, 2, 3)),
    *(f"conv_transpose{n}d" for n in (1, 2, 3)),
    *(
        f"{kind}_pool{n}d"
        for kind in ("max", "avg", "adaptive_avg", "adaptive_max")
        for n in (1, 2, 3)
    ),
    "_max_pool2d",
    "max_pool2d_with_indices",
    "adaptive_max_pool2d_with_indices",
    "interpolate",
    "linear",
}


def _tensors(obj: Any) -> list[torch.Tensor]:
    """The tensors in a nest of tuples, lists and dicts (arguments and outputs of ops)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, tuple | list):
        return [t for item in obj for t in _tensors(item)]
    if isinstance(obj, dict):
        return [t for item in obj.values() for t in _tensors(item)]
    return []


@dataclass
class _Call:
    """One call of a leaf module, or one merge op, in execution order."""

    name: str
    module: nn.Module | None
    kind: str
    occurrence: int  # how many times this module ran before (torchinfo makes a row per call)
    in_geom: Geom = _INPUT
    in_tag: int | None = None
    in_shape: tuple[int, ...] | None = None
    out_geom: Geom = _INPUT
    out_shape: tuple[int, ...] = ()


class _Tracker(TorchFunctionMode):
    """Propagates (rf, jump) through every torch op; module hooks apply the layer formulas.

    A torch function mode sees the ops that no module hook does: ``torch.cat``, the residual
    ``out += identity``, ``torch.flatten``, crops by slicing. Tensors are keyed by ``id`` and
    held by weak reference so that no intermediate activation is kept alive.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = {id(m): name for name, m in model.named_modules()}
        self.calls: list[_Call] = []
        self.stack: list[nn.Module] = []
        self._geoms: dict[int, tuple[Any, Geom, int | None]] = {}
        self._counts: dict[int, int] = {}
        self._open: dict[int, int] = {}  # id(leaf module) -> index of its call in progress
        self._handles: list[Any] = []
        self._warned: set[object] = set()

    # tensor bookkeeping
    def _lookup(self, t: torch.Tensor) -> tuple[Geom, int | None] | None:
        entry = self._geoms.get(id(t))
        if entry is None or entry[0]() is not t:  # an id reused by a new tensor
            return None
        return entry[1], entry[2]

    def _set(self, t: torch.Tensor, geom: Geom, tag: int | None) -> None:
        self._geoms[id(t)] = (weakref.ref(t), geom, tag)

    def _geom_of(self, tensors: list[torch.Tensor]) -> Geom:
        found = [e[0] for e in map(self._lookup, tensors) if e is not None]
        # A tensor the forward pass did not produce is the image itself.
        return _merge(found) if found else _INPUT

    # torch function mode
    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if getattr(func, "__name__", "") in _GEOMETRIC_FUNCTIONS:
            self._check_functional(func)
        tracked: dict[int, Geom] = {}
        for t in _tensors((args, kwargs)):
            entry = self._lookup(t)
            if entry is not None:
                tracked[id(t)] = entry[0]
        if tracked:
            geom = _merge(list(tracked.values()))
            for t in _tensors(out):
                self._set(t, geom, None)
            inside_leaf = bool(self.stack) and self._is_leaf(self.stack[-1])
            if len(tracked) > 1 and not inside_leaf:
                self._record_merge(func, out, geom)
        return out

    def _check_functional(self, func: Callable[..., Any]) -> None:
        owner = self.stack[-1] if self.stack else None
        # LocalResponseNorm pools across channels only: its avg_pool leaves the rf alone.
        known = (*_SPATIAL, nn.LocalResponseNorm)
        if owner is None or isinstance(owner, known) or owner in self._warned:
            return
        self._warned.add(owner)
        name = self.names.get(id(owner)) or type(owner).__name__
        warnings.warn(
            f"{name} calls {func.__name__} directly; the receptive field tracker only knows "
            "the nn modules, so the receptive fields after it are too small",
            stacklevel=2,
        )

    def _record_merge(self, func: Callable[..., Any], out: Any, geom: Geom) -> None:
        outs = _tensors(out)
        if not outs:
            return
        op = getattr(func, "__name__", str(func)).strip("_").rstrip("_")
        op = {"iadd": "add", "radd": "add", "concat": "cat", "concatenate": "cat"}.get(op, op)
        parent = self.names.get(id(self.stack[-1]), "") if self.stack else ""
        call = _Call(parent or "(model)", None, op, 0)
        call.out_geom = geom
        call.out_shape = tuple(outs[0].shape[1:])
        self.calls.append(call)
        self._set(outs[0], geom, len(self.calls) - 1)

    # module hooks
    @staticmethod
    def _is_leaf(module: nn.Module) -> bool:
        return next(module.children(), None) is None

    def __enter__(self) -> _Tracker:
        self._handles.append(self.model.register_forward_pre_hook(self._root_pre_hook))
        for module in self.model.modules():
            self._handles.append(module.register_forward_pre_hook(self._pre_hook))
            self._handles.append(module.register_forward_hook(self._hook))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        super().__exit__(*exc)

    def _root_pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self.stack:
            for t in _tensors(args):
                self._set(t, _INPUT, None)

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.stack.append(module)
        if not self._is_leaf(module):
            return
        occurrence = self._counts.get(id(module), 0)
        self._counts[id(module)] = occurrence + 1
        name = self.names.get(id(module), "") or type(module).__name__
        if occurrence:
            name = f"{name}#{occurrence + 1}"
        call = _Call(name, module, type(module).__name__, occurrence)
        # Captured now, before an in-place layer (ReLU(inplace=True)) overwrites its input.
        inputs = _tensors(args)
        call.in_geom = self._geom_of(inputs)
        first = self._lookup(inputs[0]) if inputs else None
        call.in_tag = first[1] if first else None
        call.in_shape = tuple(inputs[0].shape[1:]) if inputs else None
        self._open[id(module)] = len(self.calls)
        self.calls.append(call)

    def _hook(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        self.stack.pop()
        if not self._is_leaf(module):
            return
        index = self._open.pop(id(module))
        call = self.calls[index]
        outs = _tensors(output)
        geom = self._layer_geom(module, call, outs[0] if outs else None)
        call.out_geom = geom
        call.out_shape = tuple(outs[0].shape[1:]) if outs else ()
        for t in outs:
            self._set(t, geom, index)

    def _warn_non_square(self, module: nn.Module, *values: Any) -> None:
        name = self.names.get(id(module), type(module).__name__)
        if not all(map(_square, values)) and name not in self._warned:
            self._warned.add(name)
            warnings.warn(
                f"{name} is not square; its receptive field is tracked along the height axis",
                stacklevel=3,
            )

    def _layer_geom(self, module: nn.Module, call: _Call, out: torch.Tensor | None) -> Geom:
        g = call.in_geom
        if isinstance(module, nn.Linear):
            return _GLOBAL
        if g is _GLOBAL or not isinstance(module, _SPATIAL):
            # Element-wise and channel-wise layers: the mode has already passed the rf on.
            entry = self._lookup(out) if out is not None else None
            return entry[0] if entry is not None else g
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            self._warn_non_square(module, module.kernel_size, module.stride, module.dilation)
            k, s, d = (_first(v) for v in (module.kernel_size, module.stride, module.dilation))
            seen = math.ceil((d * (k - 1) + 1) / s)
            return _grow(g, seen - 1, Fraction(1, s))
        if isinstance(module, nn.modules.conv._ConvNd | nn.modules.pooling._MaxPoolNd):
            stride = module.kernel_size if module.stride is None else module.stride
            self._warn_non_square(module, module.kernel_size, stride, module.dilation)
            k, s, d = (_first(v) for v in (module.kernel_size, stride, module.dilation))
            return _grow(g, (k - 1) * d, s)
        if isinstance(module, nn.modules.pooling._AvgPoolNd):
            stride = module.stride or module.kernel_size
            self._warn_non_square(module, module.kernel_size, stride)
            k, s = _first(module.kernel_size), _first(stride)
            return _grow(g, k - 1, s)
        if out is None or call.in_shape is None or len(call.in_shape) < 2:
            return g
        size_in, size_out = call.in_shape[-2], int(out.shape[-2])
        if isinstance(module, nn.Upsample):
            taps = {"nearest": 1, "nearest-exact": 1, "bicubic": 4}.get(module.mode, 2)
            return _grow(g, taps - 1, Fraction(size_in, size_out))
        # Adaptive pools.
        if all(n == 1 for n in out.shape[2:]):
            return _GLOBAL
        if size_in % size_out == 0:
            k = size_in // size_out
            return _grow(g, k - 1, k)
        # PyTorch's adaptive windows: [floor(i * in / out), ceil((i + 1) * in / out)).
        widest = max(
            -(-(i + 1) * size_in // size_out) - i * size_in // size_out for i in range(size_out)
        )
        return _grow(g, widest - 1, Fraction(size_in, size_out))


# --- the summary --------------------------------------------------------------------------------


def _as_input(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(n) for n in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    return size


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _check_size(model: nn.Module, input_size: tuple[int, ...]) -> None:
    # Zoo models know their limits: ask before running rather than fail deep inside a layer.
    check = getattr(model, "check_input_size", None)
    if callable(check):
        check(input_size[1], input_size[2])


def _trace(
    model: nn.Module, input_size: tuple[int, ...], with_torchinfo: bool
) -> tuple[_Tracker, torchinfo.ModelStatistics | None]:
    input_size = _as_input(input_size)
    _check_size(model, input_size)
    x = torch.zeros((1, *input_size), device=_device(model))
    tracker = _Tracker(model)
    stats = None
    try:
        with tracker:
            if with_torchinfo:
                stats = torchinfo.summary(model, input_data=x, verbose=0, mode="eval")
            else:
                was_training = model.training
                model.eval()
                try:
                    with torch.no_grad():
                        model(x)
                finally:
                    model.train(was_training)
    except RuntimeError as err:
        # torchinfo wraps the model's own error; the model's message is the useful one.
        cause = err.__cause__
        if isinstance(cause, ValueError):
            raise cause from None
        if cause is not None:
            raise RuntimeError(
                f"{type(model).__name__} failed on input {input_size}: {cause}"
            ) from cause
        raise
    finally:
        # torchinfo caches every summary by class name, which would keep the model alive.
        torchinfo.torchinfo.clear_cached_forward_pass()
    return tracker, stats


def receptive_fields(model: nn.Module, input_size: Sequence[int]) -> dict[str, ReceptiveField]:
    """Receptive field and jump of the output of every leaf module call and every merge op.

    Keys are module names: ``name#2`` for a module's second call, and the enclosing module's
    name plus ``:add`` / ``:cat`` for merges (``(model):add`` at the top level). Runs one forward
    pass on a zero image of ``input_size`` = (C, H, W), batch 1, on the model's device (a model
    on the ``meta`` device costs nothing)."""
    tracker, _ = _trace(model, tuple(input_size), with_torchinfo=False)
    result: dict[str, ReceptiveField] = {}
    for call in tracker.calls:
        key = call.name if call.module is not None else f"{call.name}:{call.kind}"
        if key in result:  # a module that runs several merges
            n = 2
            while f"{key}#{n}" in result:
                n += 1
            key = f"{key}#{n}"
        result[key] = _public(call.out_geom)
    return result


def _is_foldable(call: _Call) -> bool:
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
    input_size = _as_input(input_size)
    tracker, stats = _trace(model, input_size, with_torchinfo=True)
    assert stats is not None
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
            row.rf = _public(call.out_geom)
            row_tag = index
            continue
        spatial_dims = max(len(call.in_shape or ()) - 1, 1)
        kernel, stride, padding = _geometry(module, spatial_dims)
        rows.append(
            LayerRow(
                name=call.name if module is not None else f"{call.name}:{call.kind}",
                kind=call.kind,
                input_shape=call.in_shape,
                output_shape=call.out_shape,
                kernel=kernel,
                stride=stride,
                padding=padding,
                params=params,
                macs=macs,
                rf=_public(call.out_geom),
            )
        )
        row_tag = index
    return ModelSummary(
        model_name=type(model).__name__,
        input_size=input_size,
        rows=rows,
        total_params=stats.total_params,
        trainable_params=stats.trainable_params,
        total_macs=total_macs,
    )


# --- rendering and the command line -------------------------------------------------------------


def _fmt_shape(shape: tuple[int, ...] | None) -> str:
    return "-" if not shape else "x".join(map(str, shape))


def _fmt_geometry(value: tuple[int, ...] | str | None, kernel: bool = False) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if len(set(value)) == 1:
        # Kernels read as the lecture writes them (11x11); strides and paddings as one number.
        return f"{value[0]}x{value[0]}" if kernel else str(value[0])
    return "x".join(map(str, value))


def _fmt_int(n: int) -> str:
    return f"{n:,}" if n else ""


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(int(n))


def render(summary: ModelSummary, console: Console | None = None) -> None:
    """Print ``summary`` as a rich table followed by the totals."""
    if console is None:
        console = Console()
        if not console.is_terminal:
            # Piped output: don't squeeze the table into rich's 80-column default.
            console = Console(width=200)
    c, h, w = summary.input_size
    table = Table(
        title=f"{summary.model_name}, input {c}x{h}x{w} (C x H x W, batch 1)",
        title_justify="left",
    )
    table.add_column("Layer", no_wrap=True)
    table.add_column("Type", no_wrap=True)
    for header in ("Input", "Output", "Kernel", "Stride", "Pad", "Params", "MACs", "RF", "Jump"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in summary.rows:
        rf = row.rf
        merge = row.input_shape is None
        table.add_row(
            row.name,
            f"[italic]{row.kind}[/italic]" if merge else row.kind,
            _fmt_shape(row.input_shape),
            _fmt_shape(row.output_shape),
            _fmt_geometry(row.kernel, kernel=True),
            _fmt_geometry(row.stride),
            _fmt_geometry(row.padding),
            _fmt_int(row.params),
            _fmt_int(row.macs),
            "global" if rf.is_global else str(rf.size),
            "-" if rf.is_global else str(rf.jump),
        )
    console.print(table)
    console.print(
        f"Total params: {summary.total_params:,}"
        f" (trainable {summary.trainable_params:,})\n"
        f"Total MACs:   {summary.total_macs:,} ({_human(summary.total_macs)}MAC)\n"
        "RF: receptive field in input pixels; Jump: input pixels between neighbouring outputs."
    )


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
    """Entry point of ``zoo-summary`` / ``python -m zoo.summary``; returns the exit status."""
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
