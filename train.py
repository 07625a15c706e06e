"""Train a zoo model: python train.py [experiment=lenet_mnist] [key=value ...]"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.core.config import CONFIG_DIR
from zoo.core.errors import exit_on_user_error
from zoo.training.run import train


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    with exit_on_user_error():
        metrics = train(cfg, Path(HydraConfig.get().runtime.output_dir))
    # Returned for Hydra sweepers that optimise a metric.
    return metrics.get("test/acc", metrics.get("val/acc"))


if __name__ == "__main__":
    main()
