"""Config plumbing shared by train.py, evaluate.py and the tests: resolvers, composing, and the
checks every entry point shares."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

import zoo
from zoo.core.errors import ConfigError
from zoo.core.trainer import TrainerConfig, register_configs

# Inside the package, so that an installed zoo (pip install .) has them too.
CONFIG_DIR = Path(zoo.__file__).resolve().parent / "configs"


def project_root() -> str:
    """The checkout the zoo package is in (an editable install), else the working directory
    (an installed zoo): where data/ and outputs/ go."""
    checkout = Path(zoo.__file__).resolve().parents[1]
    return str(checkout if (checkout / "pyproject.toml").is_file() else Path(os.getcwd()))


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


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for missing (???) values and for impossible Trainer arguments, the
    checks every entry point shares; each group's own schema checks the rest
    (``zoo.training.run.check_config``, ``zoo.evaluation.run.check_options``)."""
    # The hydra node (present when composed with return_hydra_config) is Hydra's business.
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(
            f"missing value(s) for {', '.join(missing)}: set them on the command line"
        )
    if cfg.get("trainer") is not None:
        TrainerConfig.parse_own(cfg.trainer, "trainer")


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
    """Compose zoo/configs/<config_name>.yaml with overrides, as the command line would, for a run
    writing into ``output_dir``, outside ``@hydra.main`` (the tests, benchmarks/step_profile.py)."""
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    # ${hydra:runtime.output_dir} is only set by a real Hydra run: stand in for it.
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg
