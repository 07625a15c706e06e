"""Typed configs: each config group that people type into has a schema, a dataclass that says
which keys the group has, of which types, within which bounds.

    @dataclass
    class MNISTConfig(Schema):
        batch_size: int = option(128, ge=1)
        val_size: int = option(5_000, gt=0, lt=60_000)

    MNISTConfig.parse(cfg.data, "data")   # an MNISTConfig, or ConfigError naming data.<key>

Key names and types are checked by OmegaConf, the schema being its structured config: a key the
schema lacks and a value of the wrong type are refused. OmegaConf has no bounds, so the bounds
each field declares with :func:`option` are checked here (the one hand-written part), with
one bound every field has: a number is finite (no NaN, no inf). :meth:`Schema.check` holds what
concerns several fields together. Every refusal is one ConfigError naming the key and what is
valid: "data.batch_size must be an integer >= 1, got 0".

A key lives in exactly one schema, so renaming it renames its check: nothing is keyed by a
dotted string that could drift from the config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

from zoo.core.errors import ConfigError

S = TypeVar("S", bound="Schema")

# Field metadata keys (dataclasses.field(metadata=...)), written by option().
_BOUNDS = "zoo_bounds"


@dataclasses.dataclass(frozen=True)
class Bounds:
    """What a field's value must satisfy beyond its type."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Sequence[Any] | None = None
    # A test of its own, for what bounds can't say (a union of kinds, a pair of numbers).
    valid: Callable[[Any], bool] | None = None
    # What is valid, in words, where the words made from the bounds would not say it well.
    what: str | None = None
    # The most that stays feasible (time, memory) where nothing in the value's meaning bounds
    # it, and why: refused in words of its own ("must be at most 10,000 (why)"), the other
    # bounds' words unchanged.
    at_most: int | float | None = None
    why: str | None = None

    def admits(self, value: Any) -> bool:
        if self.valid is not None:
            return self.valid(value)
        if self.choices is not None:
            return value in self.choices
        if not is_number(value):
            return True  # the type was OmegaConf's to check; null is allowed by the type
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def exceeded_by(self, value: Any) -> bool:
        """True if ``value`` is a number over :attr:`at_most`."""
        return self.at_most is not None and is_number(value) and value > self.at_most

    def limit(self) -> str:
        """The limit in words: "at most 10,000 (each is a forward and a backward pass)"."""
        words = f"at most {self.at_most:,}"
        return f"{words} ({self.why})" if self.why else words

    def describe(self, kind: str) -> str:
        """``kind`` ("an integer") with the bounds: "an integer >= 1", "a number in [0, 1)"."""
        if self.what is not None:
            return self.what
        if self.choices is not None:
            return f"one of {', '.join(str(choice) for choice in self.choices)}"
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt)
        high = ("]", self.le) if self.le is not None else (")", self.lt)
        if low[1] is not None and high[1] is not None:
            return f"{kind} in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        for sign, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                return f"{kind} {sign} {bound:g}"
        return kind


def option(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: Sequence[Any] | None = None,
    valid: Callable[[Any], bool] | None = None,
    what: str | None = None,
    at_most: int | float | None = None,
    why: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A schema field with bounds: ``option(128, ge=1)``, ``option("linf", choices=NORMS)``,
    ``option(None, valid=..., what="a number of batches >= 1, ...")``, ``option(20, ge=1,
    at_most=10_000, why="each step is a forward and a backward pass")``."""
    choices = tuple(choices) if choices is not None else None
    bounds = Bounds(ge, gt, le, lt, choices, valid, what, at_most, why)
    metadata = {_BOUNDS: bounds}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: Any) -> bool:
    """False for a NaN or infinite float, alone or in a list; True for anything else."""
    if isinstance(value, list | tuple):
        return all(is_finite(item) for item in value)
    return not isinstance(value, float) or math.isfinite(value)


def is_integer(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


_KINDS: dict[Any, str] = {
    int: "an integer",
    float: "a number",
    bool: "true or false",
    str: "a string",
}


def _kind(annotation: Any) -> str:
    """The words for a field's type: "an integer", "a list of numbers", ..."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(kinds[0]) if len(kinds) == 1 else "a value"
    if origin in (list, tuple, Sequence):
        (item, *_) = typing.get_args(annotation) or (Any,)
        return f"a list of {_kind(item).split(' ', 1)[-1]}s"
    if origin in (dict, Mapping):
        return "a mapping"
    return _KINDS.get(annotation, "a value")


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


@dataclasses.dataclass
class Schema:
    """Base of the zoo's config schemas (each a dataclass).

    Subclasses declare their keys as dataclass fields, with :func:`option` for bounds, and may
    override :meth:`check` for rules across fields. A field whose type is another Schema is a
    nested block (``task.adversarial.eps``), checked the same way under its own key."""

    # How refusals name the config that lacks a key ("data=mnist"); None: the key's prefix.
    title: ClassVar[str | None] = None

    @classmethod
    def parse(cls: type[S], node: Mapping[str, Any] | DictConfig | None, key: str) -> S:
        """``node`` (the group ``key`` of a composed config, or a plain mapping) as a checked
        ``cls``; ConfigError naming ``key.<field>`` if a key is unknown, a type wrong or a value
        out of bounds."""
        values = _plain(node) or {}
        if not isinstance(values, Mapping):
            raise ConfigError(f"{key} must be a mapping of options, got {values!r}")
        # A ??? merged onto a field's default would leave the default in place, unsaid.
        missing = sorted(OmegaConf.missing_keys(OmegaConf.create(dict(values))))
        if missing:
            full = _join(key, missing[0])
            raise ConfigError(f"missing value for {full}: set it on the command line")
        try:
            merged = OmegaConf.merge(OmegaConf.structured(cls), values)
            parsed = OmegaConf.to_object(merged)
        except ConfigKeyError as err:
            raise ConfigError(cls.unknown_key_message(key, err.full_key)) from err
        except MissingMandatoryValue as err:  # a required field the config left out
            full = _join(key, err.full_key)
            raise ConfigError(f"missing value for {full}: set it on the command line") from err
        except ValidationError as err:
            raise ConfigError(cls._type_message(key, err.full_key, values)) from err
        assert isinstance(parsed, cls)
        parsed._check_all(key)
        return parsed

    @classmethod
    def parse_own(cls: type[S], node: Mapping[str, Any] | DictConfig, key: str = "") -> S:
        """:meth:`parse` of the keys of ``node`` this schema declares, the others left to whoever
        reads them: a run's top-level keys beside its groups, the Trainer arguments that
        Lightning checks itself."""
        own = {field.name for field in dataclasses.fields(cls)}
        return cls.parse({name: node[name] for name in node if name in own}, key)

    @classmethod
    def unknown_key_message(cls, key: str, relative: str) -> str:
        """The refusal of a key the schema lacks: ``relative`` ("colour", "adversarial.colour")
        under ``key`` ("task"), with the closest of its fields when one is close (a typo)."""
        owner = cls
        *parents, name = relative.split(".")
        for parent in parents:
            owner = _field_type(owner, parent) or owner
        names = [f.name for f in dataclasses.fields(owner)]
        where = owner.title or _join(key, ".".join(parents)) or "this config"
        message = (
            f"{_join(key, relative)} is not an option of {where} (options: {', '.join(names)})"
        )
        closest = difflib.get_close_matches(name, names, n=1)
        if closest:
            meant = _join(_join(key, ".".join(parents)), closest[0])
            message += f"; did you mean {meant}?"
        return message

    @classmethod
    def _type_message(cls, key: str, full_key: str, values: Mapping[str, Any]) -> str:
        """A value OmegaConf could not convert to its field's type, as ``describe`` says."""
        # full_key: "eps" or "eps[1]" or "adversarial.eps": the field, not the list item.
        path = full_key.split("[", 1)[0]
        owner, value = cls, values
        *parents, name = path.split(".")
        for parent in parents:
            owner = _field_type(owner, parent) or owner
            value = value.get(parent, {}) if isinstance(value, Mapping) else {}
        field = {f.name: f for f in dataclasses.fields(owner)}.get(name)
        given = value.get(name) if isinstance(value, Mapping) else value
        full = _join(key, path)
        if field is None:
            return f"{full}: {given!r} is not valid"
        return f"{full} must be {describe(owner, field)}, got {given!r}"

    def _check_all(self, key: str) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Schema):
                value._check_all(_join(key, field.name))
                continue
            if not is_finite(value):
                # Every field's, bounded or not: NaN passes no comparison and inf passes a lower
                # bound; neither is a learning rate, a scale or a budget.
                raise ConfigError(
                    f"{_join(key, field.name)} must be a finite number, got {value!r}"
                )
            bounds = field.metadata.get(_BOUNDS)
            if bounds is not None and not bounds.admits(value):
                raise ConfigError(
                    f"{_join(key, field.name)} must be {describe(type(self), field)}, got {value!r}"
                )
            if bounds is not None and bounds.exceeded_by(value):
                raise ConfigError(
                    f"{_join(key, field.name)} must be {bounds.limit()}, got {value!r}"
                )
        self.check(key)

    def check(self, key: str) -> None:
        """Rules across fields (``key`` is where this block sits): raise ConfigError. None here."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (nested blocks as dicts): what checkpoints and logs hold."""
        return dataclasses.asdict(self)


def describe(schema: type[Schema], field: dataclasses.Field) -> str:
    """What is valid for ``field`` of ``schema``, in words."""
    bounds = field.metadata.get(_BOUNDS) or Bounds()
    hints = typing.get_type_hints(schema)
    return bounds.describe(_kind(hints.get(field.name, Any)))


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key and name else key or name


def _field_type(schema: type[Schema], name: str) -> type[Schema] | None:
    """The nested schema of field ``name``, if it is one (``X`` or ``X | None``)."""
    annotation = typing.get_type_hints(schema).get(name)
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, Schema):
            return candidate
    return None
