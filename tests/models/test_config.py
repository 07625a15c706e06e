"""zoo.models.config: each registered model's config schema is its constructor's arguments, and
every zoo/configs/model/*.yaml parses with it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from zoo import models
from zoo.core.config import CONFIG_DIR
from zoo.core.errors import ConfigError
from zoo.models.config import parse, schema


@pytest.mark.parametrize("name", models.available())
def test_the_schema_holds_the_constructors_options(name: str) -> None:
    fields = {f.name: f.default for f in dataclasses.fields(schema(name))}
    entry = models.MODELS.entry(name)
    defaults = inspect.signature(entry.builder).parameters
    assert fields.pop("name") is dataclasses.MISSING
    assert fields.pop("weights") is None
    assert fields == {argument: defaults[argument].default for argument in entry.arguments}


MODEL_CONFIGS = sorted((CONFIG_DIR / "model").glob("*.yaml"))


@pytest.mark.parametrize("path", MODEL_CONFIGS, ids=lambda p: p.stem)
def test_every_model_config_parses_with_its_schema(path: Path) -> None:
    written = OmegaConf.to_container(OmegaConf.load(path))
    written.pop("defaults", None)
    # The data group fills these in; any integer stands in for them here.
    spec = {**written, "in_channels": 3, "num_classes": 10}
    assert parse(spec).name == path.stem


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "lenet", "modern": "abc"}, "model.modern must be true or false, got 'abc'"),
        ({"name": "lenet", "depth": 3}, r"model.depth is not an option of model=lenet"),
        ({"name": "resnet34", "layers": [1, 1, 1, 1]}, r"model.layers is not an option of model="),
        ({"name": "unet", "base_width": "wide"}, "model.base_width must be an integer, got 'wide'"),
        ({"name": "resnet81"}, r"model.name 'resnet81' is not a zoo model; available: alexnet"),
    ],
)
def test_a_wrong_option_is_one_line_naming_it(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(spec)
