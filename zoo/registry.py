"""Name -> builder registries for models and datamodules, so configs and checkpoints carry
names and plain arguments, never class paths."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
B = TypeVar("B", bound=Callable[..., object])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[B], B]:
        """Decorator registering a class or function under ``name``."""

        def decorator(builder: B) -> B:
            if name in self._builders:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._builders[name] = builder  # type: ignore[assignment]
            return builder

        return decorator

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def get(self, name: str) -> Callable[..., T]:
        """The registered builder itself (models are classes: their attributes are readable)."""
        if name not in self._builders:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        return self._builders[name]

    def build(self, name: str, **kwargs: object) -> T:
        """Build ``name``; an unknown name or argument raises a ValueError listing what is valid."""
        builder = self.get(name)
        accepted = [p for p in inspect.signature(builder).parameters if p != "self"]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ValueError(
                f"{self.kind} {name!r} got unknown argument(s) {unknown}; "
                f"valid arguments: {', '.join(accepted)}"
            )
        return builder(**kwargs)
