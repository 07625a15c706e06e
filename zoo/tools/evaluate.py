"""Evaluate a checkpoint: zoo-evaluate ckpt_path=PATH [split=val] [attack=fgsm]
[predict=DIR_OR_FILES] [export=onnx] [key=value ...]

The console command of an installed zoo; ``python evaluate.py`` in a checkout runs the same
``main``. Hydra names the job after this module, ``evaluate``: the run's log file is
evaluate.log, and its configs come from the package (zoo/configs/), whatever the working
directory.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from zoo.core.cli import run_command_line
from zoo.core.config import CONFIG_DIR
from zoo.core.errors import exit_on_user_error
from zoo.core.logs import quiet_library_noise
from zoo.core.trainer import register_configs
from zoo.evaluation.run import evaluate

quiet_library_noise()  # before Hydra composes the config, which warns too
register_configs()  # trainer/lightning, which zoo/configs/trainer/default.yaml extends
CONFIG_NAME = "evaluate"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)
def job(cfg: DictConfig) -> float | None:
    """One Hydra job: the evaluation, or one job of a multirun."""
    with exit_on_user_error():
        report = evaluate(cfg, Path(HydraConfig.get().runtime.output_dir))
    # Returned for Hydra sweepers that optimise a metric.
    return report.get("acc", report.get("miou"))


def main() -> None:
    """zoo-evaluate and python evaluate.py: the command line in sys.argv."""
    run_command_line(CONFIG_NAME, job)


if __name__ == "__main__":
    main()
