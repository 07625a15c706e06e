"""Receptive fields and output sizes: the lecture's arithmetic, and a tracker that follows it
through any network.

Output size of a convolution or pool along one axis (:func:`conv_output_size`)::

    out = floor((in + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1

No library tracks receptive fields, so that part is written here by hand (:class:`Tracker`):
every tensor carries the receptive field size (``rf``, in input pixels) and the jump (distance
in input pixels between neighbouring positions, i.e. the cumulative stride) of its positions.

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

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

__all__ = [
    "Call",
    "ReceptiveField",
    "Tracker",
    "conv_output_size",
    "receptive_fields",
    "trace",
]


def conv_output_size(
    size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1
) -> int:
    """Output size along one axis of a convolution or pool, the lecture's formula::

        floor((size + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1

    AlexNet's first layer: ``conv_output_size(227, 11, stride=4) == 55``. Pools with
    ``ceil_mode=True`` round up instead, and transposed convolutions invert the formula; neither
    is covered. Raises ``ValueError`` when the (dilated) window does not fit in the padded input.
    """
    if kernel < 1 or stride < 1 or dilation < 1 or padding < 0:
        raise ValueError(
            f"need kernel, stride, dilation >= 1 and padding >= 0; got kernel={kernel}, "
            f"stride={stride}, padding={padding}, dilation={dilation}"
        )
    span = dilation * (kernel - 1) + 1
    if size + 2 * padding < span:
        raise ValueError(
            f"input size {size} with padding {padding} is too small for a window of {span}"
        )
    return (size + 2 * padding - span) // stride + 1


class ReceptiveField(NamedTuple):
    """Receptive field size and jump of a layer's output, in input pixels (``None``: global)."""

    size: int | float | None
    jump: int | float | None

    @property
    def is_global(self) -> bool:
        return self.size is None


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
class Call:
    """One call of a leaf module, or one merge op (``module`` None), in execution order."""

    name: str
    module: nn.Module | None
    kind: str
    occurrence: int  # how many times this module ran before (torchinfo makes a row per call)
    in_geom: Geom = _INPUT
    in_tag: int | None = None  # index of the call that produced the first input, if any
    in_shape: tuple[int, ...] | None = None
    out_geom: Geom = _INPUT
    out_shape: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        """The module name, or the enclosing module's name plus ``:add`` / ``:cat``."""
        return self.name if self.module is not None else f"{self.name}:{self.kind}"

    @property
    def rf(self) -> ReceptiveField:
        """Receptive field and jump of the output."""
        return _public(self.out_geom)


class Tracker(TorchFunctionMode):
    """Propagates (rf, jump) through every torch op; module hooks apply the layer formulas.

    A torch function mode sees the ops that no module hook does: ``torch.cat``, the residual
    ``out += identity``, ``torch.flatten``, crops by slicing. Tensors are keyed by ``id`` and
    held by weak reference so that no intermediate activation is kept alive.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = {id(m): name for name, m in model.named_modules()}
        self.calls: list[Call] = []
        self.stack: list[nn.Module] = []
        self._geoms: dict[int, tuple[Any, Geom, int | None]] = {}
        self._counts: dict[int, int] = {}
        self._open: dict[int, int] = {}  # id(leaf module) -> index of its call in progress
        self._handles: list[Any] = []
        self._warned: set[object] = set()

    def _name(self, module: nn.Module) -> str:
        # The root model is named "": warnings and rows need something to show.
        return self.names.get(id(module), "") or type(module).__name__

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
        warnings.warn(
            f"{self._name(owner)} calls {func.__name__} directly; the receptive field tracker "
            "only knows the nn modules, so the receptive fields after it are too small",
            stacklevel=2,
        )

    def _record_merge(self, func: Callable[..., Any], out: Any, geom: Geom) -> None:
        outs = _tensors(out)
        if not outs:
            return
        op = getattr(func, "__name__", str(func)).strip("_").rstrip("_")
        op = {"iadd": "add", "radd": "add", "concat": "cat", "concatenate": "cat"}.get(op, op)
        parent = self.names.get(id(self.stack[-1]), "") if self.stack else ""
        call = Call(parent or "(model)", None, op, 0)
        call.out_geom = geom
        call.out_shape = tuple(outs[0].shape[1:])
        self.calls.append(call)
        self._set(outs[0], geom, len(self.calls) - 1)

    # module hooks
    @staticmethod
    def _is_leaf(module: nn.Module) -> bool:
        return next(module.children(), None) is None

    def __enter__(self) -> Tracker:
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
        name = self._name(module)
        if occurrence:
            name = f"{name}#{occurrence + 1}"
        call = Call(name, module, type(module).__name__, occurrence)
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
        name = self._name(module)
        if not all(map(_square, values)) and name not in self._warned:
            self._warned.add(name)
            warnings.warn(
                f"{name} is not square; its receptive field is tracked along the height axis",
                stacklevel=3,
            )

    def _layer_geom(self, module: nn.Module, call: Call, out: torch.Tensor | None) -> Geom:
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


# --- running a model under the tracker ---------------------------------------------------------


def _as_input(input_size: Sequence[int]) -> tuple[int, ...]:
    size = tuple(int(n) for n in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (channels, height, width), got {tuple(input_size)}")
    return size


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _eval_forward(model: nn.Module, x: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        model.train(was_training)


def trace(
    model: nn.Module,
    input_size: Sequence[int],
    forward: Callable[[nn.Module, torch.Tensor], Any] = _eval_forward,
) -> tuple[Tracker, Any]:
    """Run ``forward(model, x)`` under a :class:`Tracker` and return it with what forward returned.

    ``x`` is a zero image of ``input_size`` = (C, H, W), batch 1, on the model's device (a model
    on the ``meta`` device costs nothing). The default forward is one eval-mode pass without
    gradients; the summary passes torchinfo's instead, so one pass serves both.
    """
    input_size = _as_input(input_size)
    # Zoo models know their limits: ask before running rather than fail deep inside a layer.
    check = getattr(model, "check_input_size", None)
    if callable(check):
        check(input_size[1], input_size[2])
    x = torch.zeros((1, *input_size), device=_device(model))
    tracker = Tracker(model)
    with tracker:
        result = forward(model, x)
    return tracker, result


def receptive_fields(model: nn.Module, input_size: Sequence[int]) -> dict[str, ReceptiveField]:
    """Receptive field and jump of the output of every leaf module call and every merge op.

    Keys are module names: ``name#2`` for a module's second call, and the enclosing module's
    name plus ``:add`` / ``:cat`` for merges (``(model):add`` at the top level). Runs one forward
    pass on a zero image of ``input_size`` = (C, H, W), batch 1, on the model's device (a model
    on the ``meta`` device costs nothing)."""
    tracker, _ = trace(model, input_size)
    result: dict[str, ReceptiveField] = {}
    for call in tracker.calls:
        key = call.label
        if key in result:  # a module that runs several merges
            n = 2
            while f"{key}#{n}" in result:
                n += 1
            key = f"{key}#{n}"
        result[key] = call.rf
    return result
