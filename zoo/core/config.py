"""Config plumbing shared by train.py, evaluate.py and the tests: resolvers and validation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

import zoo
from zoo.core.errors import ConfigError

# configs/ sits beside the zoo package in a checkout (editable install).
CONFIG_DIR = Path(zoo.__file__).resolve().parents[1] / "configs"


def project_root() -> str:
    """The checkout holding configs/, else the working directory (a non-editable install)."""
    root = CONFIG_DIR.parent
    return str(root if CONFIG_DIR.is_dir() else Path(os.getcwd()))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("zoo_root"):
        OmegaConf.register_new_resolver("zoo_root", project_root)


register_resolvers()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# key -> (test, what is valid). Only the keys users type most, checked before any data loads;
# Lightning and the models check the rest themselves.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: v is None or _is_int(v), "an integer or null"),
    "data.batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "data.eval_batch_size": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "data.image_size": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1 or null"),
    "optimizer.lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "optimizer.weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "trainer.max_epochs": (lambda v: v is None or (_is_int(v) and v >= 1), "an integer >= 1"),
    "trainer.max_steps": (lambda v: _is_int(v) and v >= -1, "an integer >= -1"),
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for missing (???) values and for impossible values of common keys."""
    # The hydra node (present when composed with return_hydra_config) is Hydra's business.
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(
            f"missing value(s) for {', '.join(missing)}: set them on the command line"
        )
    for key, (valid, description) in RULES.items():
        node = OmegaConf.select(cfg, key, default="__absent__")
        if isinstance(node, str) and node == "__absent__":
            continue
        if not valid(node):
            raise ConfigError(f"{key} must be {description}, got {node!r}")


def to_plain(cfg: DictConfig | ListConfig | Any) -> Any:
    """A resolved, plain-python copy: what goes into checkpoints and logs."""
    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    return cfg


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a callbacks/logger group (each a dict with _target_).

    Only for config the user composed: never for config read out of a checkpoint."""
    if not group:
        return []
    return [instantiate(node) for node in group.values() if node and "_target_" in node]
