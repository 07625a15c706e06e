"""Name -> builder registries for models and datamodules, so configs and checkpoints carry
names and plain arguments, never class paths.

A name maps to a builder (a class or function) and, optionally, arguments fixed at registration,
so that one class can serve a family of variants, as torchvision's ``_resnet(block, layers)``:

    @MODELS.register("lenet")  # a class of its own
    class LeNet5(ZooModel): ...

    MODELS.register("resnet34", ResNet, block=BasicBlock, layers=(3, 4, 6, 3))  # a variant

The fixed arguments belong to the name: ``build`` supplies them and rejects them from callers,
so a checkpoint's ``{"name": "resnet34", "num_classes": 10}`` always means the same network.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Generic, TypeVar, overload

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., object])


@dataclass(frozen=True)
class Entry(Generic[T]):
    """What a name stands for: ``builder(**fixed, **arguments)``."""

    name: str
    builder: Callable[..., T]
    fixed: Mapping[str, object] = field(default_factory=dict)

    @property
    def arguments(self) -> list[str]:
        """The arguments a caller may pass, in the builder's order (fixed ones excluded)."""
        return [p for p in _parameters(self.builder) if p not in self.fixed]


def _parameters(builder: Callable[..., object]) -> list[str]:
    # Only named parameters: a builder's *args or **kwargs would accept anything, which is the
    # opposite of what the "unknown argument" check is for.
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [
        name
        for name, p in inspect.signature(builder).parameters.items()
        if name != "self" and p.kind in kinds
    ]


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    @overload
    def register(self, name: str, /, **fixed: object) -> Callable[[B], B]: ...

    @overload
    def register(self, name: str, builder: B, /, **fixed: object) -> B: ...

    def register(
        self, name: str, builder: B | None = None, /, **fixed: object
    ) -> B | Callable[[B], B]:
        """Register ``builder`` under ``name``, with ``fixed`` arguments bound.

        Without ``builder`` this is a decorator (``@register("lenet")``); with it, a plain call
        (``register("resnet34", ResNet, layers=(3, 4, 6, 3))``). Either way it returns the
        builder unchanged. A taken name, or a fixed argument the builder doesn't take, raises a
        ValueError at import time rather than at the first build.
        """

        def decorator(builder: B) -> B:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            parameters = _parameters(builder)
            unknown = sorted(set(fixed) - set(parameters))
            if unknown:
                what = getattr(builder, "__name__", repr(builder))
                raise ValueError(f"{self.kind} {name!r}: {what} takes no argument(s) {unknown}")
            # A read-only copy: a caller's dict mutated later must not change the variant.
            entry = Entry(name, builder, MappingProxyType(dict(fixed)))
            self._entries[name] = entry  # type: ignore[assignment]
            return builder

        return decorator if builder is None else decorator(builder)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        """The builder and fixed arguments registered under ``name``."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Callable[..., T]:
        """The registered builder itself (models are classes: their attributes are readable).

        For a variant this is the family's class (``ResNet`` for ``"resnet34"``); its fixed
        arguments are in ``entry(name).fixed``.
        """
        return self.entry(name).builder

    def arguments(self, name: str, **kwargs: object) -> dict[str, object]:
        """The complete keyword arguments ``build(name, **kwargs)`` passes to the builder: the
        fixed ones plus ``kwargs``. An unknown name or argument (a fixed one included) raises a
        ValueError listing what is valid."""
        entry = self.entry(name)
        accepted = entry.arguments
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} got unknown argument(s) {unknown}; "
                f"valid arguments: {', '.join(accepted)}"
            )
        return {**entry.fixed, **kwargs}

    def build(self, name: str, **kwargs: object) -> T:
        """Build ``name``; an unknown name or argument raises a ValueError listing what is valid."""
        return self.entry(name).builder(**self.arguments(name, **kwargs))
