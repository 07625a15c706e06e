"""Config plumbing shared by train.py, evaluate.py and the tests: resolvers and validation."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

import zoo
from zoo.core.errors import ConfigError

# configs/ sits beside the zoo package in a checkout (editable install).
CONFIG_DIR = Path(zoo.__file__).resolve().parents[1] / "configs"


def project_root() -> str:
    """The checkout holding configs/, else the working directory (a non-editable install)."""
    root = CONFIG_DIR.parent
    return str(root if CONFIG_DIR.is_dir() else Path(os.getcwd()))


def config_subdir(run_dir: str, stamp: str) -> str:
    """Where Hydra writes a run's config (``hydra.output_subdir``): ``.hydra``, or, in a run
    directory that has one already (a resume), ``.hydra/<stamp>``: the first run's config is
    never overwritten, and each resume's is kept beside it."""
    return f".hydra/{stamp}" if (Path(run_dir) / ".hydra" / "config.yaml").exists() else ".hydra"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("zoo_root"):
        OmegaConf.register_new_resolver("zoo_root", project_root)
    if not OmegaConf.has_resolver("zoo_config_subdir"):
        # Cached: read again once the config is written, it must still name the same place.
        OmegaConf.register_new_resolver("zoo_config_subdir", config_subdir, use_cache=True)


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
    "trainer.min_epochs": (lambda v: v is None or (_is_int(v) and v >= 0), "an integer >= 0"),
    # Counts and intervals that Lightning divides by or steps with: 0 fails deep inside a run.
    "trainer.accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.log_every_n_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "trainer.check_val_every_n_epoch": (
        lambda v: v is None or (_is_int(v) and v >= 1),
        "an integer >= 1 or null",
    ),
    "trainer.val_check_interval": (
        lambda v: v is None or (_is_int(v) and v >= 1) or (_is_number(v) and 0 < v <= 1),
        "a number of batches >= 1, a fraction of an epoch in (0, 1], or null",
    ),
    "trainer.num_sanity_val_steps": (
        lambda v: v is None or (_is_int(v) and v >= -1),
        "an integer >= -1 (-1: all) or null",
    ),
    "trainer.gradient_clip_val": (
        lambda v: v is None or (_is_number(v) and v >= 0),
        "a number >= 0 or null",
    ),
    # What torch.optim would refuse only once training starts.
    "optimizer.momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "optimizer.eps": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "optimizer.betas": (
        lambda v: (
            isinstance(v, list | ListConfig)
            and len(v) == 2
            and all(_is_number(b) and 0 <= b < 1 for b in v)
        ),
        "two numbers in [0, 1)",
    ),
    # callbacks=ema (configs/callbacks/ema.yaml)
    "callbacks.ema.decay": (lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "callbacks.ema.update_every_n_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "callbacks.ema.update_starting_at_step": (
        lambda v: v is None or (_is_int(v) and v >= 0),
        "an integer >= 0 or null",
    ),
    # What sweeps optimise (zoo/training/objective.py): test/ would tune on the test set.
    "optimized_metric": (
        lambda v: v is None or (isinstance(v, str) and v.startswith("val/")),
        "a validation metric (val/...) or null, never a test metric",
    ),
}


# MNIST's 60,000 training images, which data.val_size splits into train and validation.
MNIST_TRAINING_IMAGES = 60_000
_MNIST_SPLIT = (
    lambda v: _is_int(v) and 0 < v < MNIST_TRAINING_IMAGES,
    f"an integer in (0, {MNIST_TRAINING_IMAGES}): the validation images taken from MNIST's "
    f"{MNIST_TRAINING_IMAGES} training images, leaving the rest to train on",
)
_COUNT = (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
# Rules of one dataset's keys: data.name -> key -> (test, what is valid).
DATASET_RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "mnist": {"data.val_size": _MNIST_SPLIT},
    "mnist_segmentation": {"data.val_size": _MNIST_SPLIT},
    "imagenet_synthetic": {"data.val_size": _COUNT, "data.train_size": _COUNT},
}


def _check_together(cfg: DictConfig) -> None:
    """Values each valid alone that contradict each other."""
    min_epochs = OmegaConf.select(cfg, "trainer.min_epochs", default=None)
    max_epochs = OmegaConf.select(cfg, "trainer.max_epochs", default=None)
    if _is_int(min_epochs) and _is_int(max_epochs) and min_epochs > max_epochs:
        raise ConfigError(
            f"trainer.min_epochs={min_epochs} is more than trainer.max_epochs={max_epochs}"
        )


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for missing (???) values and for impossible values of common keys."""
    # The hydra node (present when composed with return_hydra_config) is Hydra's business.
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(
            f"missing value(s) for {', '.join(missing)}: set them on the command line"
        )
    dataset = OmegaConf.select(cfg, "data.name", default=None)
    rules = {**RULES, **DATASET_RULES.get(dataset, {})}
    for key, (valid, description) in rules.items():
        node = OmegaConf.select(cfg, key, default="__absent__")
        if isinstance(node, str) and node == "__absent__":
            continue
        if not valid(node):
            raise ConfigError(f"{key} must be {description}, got {node!r}")
    _check_together(cfg)


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


def compose_config(
    overrides: list[str], output_dir: Path, config_name: str = "train"
) -> DictConfig:
    """Compose configs/<config_name>.yaml with overrides, as the command line would, for a run
    writing into ``output_dir``, outside ``@hydra.main`` (the tests, zoo.tools.step_profile)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    # ${hydra:runtime.output_dir} is only set by a real Hydra run: stand in for it.
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
