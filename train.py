"""Train a zoo model: python train.py [experiment=lenet_mnist] [key=value ...]"""

import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.core.config import CONFIG_DIR
from zoo.core.errors import exit_on_user_error
from zoo.training.run import train

# configs/hydra/launcher/submitit_*.yaml shadow the plugin's configs of the same names on purpose,
# with our defaults, and Hydra still checks them against the plugin's schema (catching typos).
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    # For Hydra sweepers that optimise a metric: a validation metric, never a test one.
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
