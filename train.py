"""Train a zoo model: python train.py [experiment=lenet_mnist] [key=value ...]"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.core.config import CONFIG_DIR
from zoo.core.errors import exit_on_user_error
from zoo.core.logs import quiet_library_noise
from zoo.core.trainer import register_configs
from zoo.training.run import train

quiet_library_noise()  # before Hydra composes the config, which warns too
register_configs()  # trainer/lightning, which configs/trainer/default.yaml extends


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    # For Hydra sweepers that optimise a metric: a validation metric, never a test one.
    return metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None


if __name__ == "__main__":
    main()
