"""``evaluate.py model=resnet18 model.weights=IMAGENET1K_V1 data=imagenet``: published weights
evaluated without a checkpoint of ours, through everything a checkpoint goes through (metrics,
reports, predictions, attacks, export, visualisation).

The network is built by ``zoo.tasks.build.build_task`` from the composed model config, so its
weights are fetched, verified and fitted as in training (``zoo.models.weights``); its class names
are the weights' categories; the data's preprocessing follows the weights (``follow_weights``).
"""

from __future__ import annotations

from omegaconf import DictConfig

from zoo.core.config import to_plain
from zoo.core.errors import ConfigError
from zoo.evaluation.checkpoint import Checkpoint
from zoo.tasks.build import build_task

USAGE = (
    "evaluate.py needs ckpt_path=<checkpoint>, or model=<name> model.weights=<weights> "
    "data=<name> to evaluate published weights"
)


def check_source(cfg: DictConfig) -> None:
    """ConfigError unless exactly one of ckpt_path= and model= names what to evaluate."""
    model = cfg.get("model")
    if cfg.get("ckpt_path") and model:
        raise ConfigError(
            "give ckpt_path= or model= (with model.weights=), not both: a checkpoint holds its "
            "own model"
        )
    if not cfg.get("ckpt_path") and not model:
        raise ConfigError(USAGE)
    # Before anything resolves the model config, which interpolates ${data.num_classes}.
    if model and not (cfg.get("data") or {}).get("name"):
        raise ConfigError(f"model={model.get('name')}: name the dataset too, data=<name>")


def published_weights(cfg: DictConfig) -> Checkpoint:
    """What a checkpoint would give for the model and weights ``model=`` names."""
    check_source(cfg)
    spec = to_plain(cfg.model)
    if not spec.get("weights"):
        raise ConfigError(f"{USAGE}: model.weights is null")
    data = to_plain(cfg.data)
    module = build_task(spec, {}, None, data, {})
    hparams = dict(module.hparams)
    return Checkpoint(module.eval(), hparams, dict(hparams.get("data") or data))
