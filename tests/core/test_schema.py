"""zoo.core.schema: a schema refuses unknown keys, wrong types and values out of bounds, each in
one line naming the key, and nested blocks are checked under their own key."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from omegaconf import OmegaConf

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option


@dataclass
class Budget(Schema):
    eps: float = option(0.1, ge=0, le=1)
    steps: int = option(7, ge=1)
    norm: str = option("linf", choices=("linf", "l2"))


@dataclass
class Example(Schema):
    title = "example=toy"

    rate: float = option(0.0, ge=0, lt=1)
    count: int | None = option(None, gt=0, lt=100)
    names: list[str] = field(default_factory=list)
    pair: list[float] = option(
        default_factory=lambda: [0.9, 0.999],
        valid=lambda v: len(v) == 2 and all(0 <= b < 1 for b in v),
        what="two numbers in [0, 1)",
    )
    budget: Budget | None = None
    low: int = 0
    high: int = 10

    def check(self, key: str) -> None:
        if self.low > self.high:
            raise ConfigError(f"{key}.low={self.low} is more than {key}.high={self.high}")


def test_a_valid_config_parses_into_typed_values() -> None:
    parsed = Example.parse({"rate": 0, "count": 3, "budget": {"eps": 1}}, "toy")
    assert parsed == Example(rate=0.0, count=3, budget=Budget(eps=1.0))
    assert isinstance(parsed.rate, float)
    assert parsed.to_dict()["budget"] == {"eps": 1.0, "steps": 7, "norm": "linf"}


def test_a_composed_dictconfig_parses_with_its_interpolations_resolved() -> None:
    node = OmegaConf.create({"low": 2, "high": "${low}"})
    assert Example.parse(node, "toy").high == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"rate": 1.0}, r"^toy.rate must be a number in \[0, 1\), got 1.0$"),
        ({"rate": "fast"}, r"^toy.rate must be a number in \[0, 1\), got 'fast'$"),
        ({"rate": True}, r"^toy.rate must be a number in \[0, 1\), got True$"),
        ({"count": 0}, r"^toy.count must be an integer in \(0, 100\), got 0$"),
        ({"count": 2.5}, r"^toy.count must be an integer in \(0, 100\), got 2.5$"),
        ({"pair": [0.9, 1.5]}, r"^toy.pair must be two numbers in \[0, 1\), got \[0.9, 1.5\]$"),
        ({"names": "abc"}, r"^toy.names must be a list of strings, got 'abc'$"),
        ({"colour": "red"}, r"^toy.colour is not an option of example=toy \(options: rate, "),
        ({"budget": {"eps": 2}}, r"^toy.budget.eps must be a number in \[0, 1\], got 2.0$"),
        ({"budget": {"steps": "x"}}, r"^toy.budget.steps must be an integer >= 1, got 'x'$"),
        ({"budget": {"norm": "l1"}}, r"^toy.budget.norm must be one of linf, l2, got 'l1'$"),
        ({"budget": {"size": 1}}, r"^toy.budget.size is not an option of toy.budget"),
        ({"low": 5, "high": 1}, r"^toy.low=5 is more than toy.high=1$"),
    ],
)
def test_each_refusal_is_one_line_naming_the_key(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Example.parse(values, "toy")
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("values", "suggestion"),
    [
        ({"rte": 0.5}, "; did you mean toy.rate?"),
        ({"budget": {"step": 3}}, "; did you mean toy.budget.steps?"),
    ],
)
def test_an_unknown_key_close_to_a_field_suggests_it(values: dict, suggestion: str) -> None:
    with pytest.raises(ConfigError, match="is not an option of") as refused:
        Example.parse(values, "toy")
    assert str(refused.value).endswith(suggestion)


def test_an_unknown_key_close_to_no_field_suggests_nothing() -> None:
    with pytest.raises(ConfigError) as refused:
        Example.parse({"colour": "red"}, "toy")
    assert "did you mean" not in str(refused.value)


def test_a_missing_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"missing value for toy.budget.eps"):
        Example.parse(OmegaConf.create({"budget": {"eps": "???"}}), "toy")


def test_parse_own_leaves_other_keys_to_their_readers() -> None:
    node = {"rate": 0.5, "somebody_elses": object()}
    assert Example.parse_own(node, "toy").rate == 0.5
    with pytest.raises(ConfigError, match=r"toy\.somebody_elses is not an option"):
        Example.parse({"rate": 0.5, "somebody_elses": 1}, "toy")


@dataclass
class Ascent(Schema):
    # Unbounded above by its meaning, bounded by what stays feasible.
    steps: int = option(20, ge=1, at_most=10_000, why="each is a forward pass")
    starts: int = option(9, ge=1, at_most=64)
    lr: float = option(0.1, gt=0)
    scale: float = 1.4  # no bounds at all
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"steps": 10_001},
            r"^a\.steps must be at most 10,000 \(each is a forward pass\), got 10001$",
        ),
        ({"starts": 65}, r"^a\.starts must be at most 64, got 65$"),
        # Under the lower bound, the words of the lower bound, as before.
        ({"steps": 0}, r"^a\.steps must be an integer >= 1, got 0$"),
    ],
)
def test_a_value_over_its_feasible_limit_is_refused_naming_the_limit(
    values: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Ascent.parse(values, "a")
    assert Ascent.parse({"steps": 10_000, "starts": 64}, "a").steps == 10_000


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"lr": float("nan")}, r"^a\.lr must be a finite number, got nan$"),
        # inf passes a lower bound: finiteness is checked first, for every field.
        ({"lr": float("inf")}, r"^a\.lr must be a finite number, got inf$"),
        ({"scale": float("-inf")}, r"^a\.scale must be a finite number, got -inf$"),
        ({"betas": [0.9, float("nan")]}, r"^a\.betas must be a finite number, got \[0\.9, nan\]$"),
        ({"lr": "nan"}, r"^a\.lr must be a finite number, got nan$"),
    ],
)
def test_every_number_must_be_finite_bounded_or_not(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Ascent.parse(values, "a")
