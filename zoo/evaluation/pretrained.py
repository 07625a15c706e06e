"""``evaluate.py model=resnet18 model.weights=IMAGENET1K_V1 data=imagenet``: published weights
evaluated without a checkpoint of ours, through everything a checkpoint goes through (metrics,
reports, predictions, attacks, export, visualisation).

The network is built by ``zoo.tasks.build.build_task`` from the composed model config, so its
weights are fetched, verified and fitted as in training (``zoo.models.weights``); its class names
are the weights' categories; the data's preprocessing follows the weights (``follow_weights``).
The zoo's own weights (``model=lenet model.weights=MNIST_V1``) need no data=: they are evaluated
on the data config they were trained and measured on, their card's.
Unlike training, which fills a new head, the weights must fill the whole network.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf, open_dict

from zoo import models
from zoo.core.config import CONFIG_DIR, to_plain
from zoo.core.errors import ConfigError
from zoo.evaluation.checkpoint import Checkpoint
from zoo.models import trained_weights
from zoo.models.loading import WeightsError
from zoo.tasks.build import build_task

USAGE = (
    "evaluate.py needs ckpt_path=<checkpoint>, or model=<name> model.weights=<weights> "
    "data=<name> to evaluate published weights"
)


def check_source(cfg: DictConfig) -> None:
    """ConfigError unless exactly one of ckpt_path= and model= names what to evaluate. With
    model= naming the zoo's own weights and no data=, ``cfg.data`` becomes their data config
    (:func:`trained_data`)."""
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
        dataset = trained_data(cfg)
        if dataset is None:
            raise ConfigError(f"model={model.get('name')}: name the dataset too, data=<name>")
        with open_dict(cfg):
            cfg.data = dataset


def trained_data(cfg: DictConfig) -> DictConfig | None:
    """For ``model.weights`` naming one of the zoo's own sets, the data config its card holds,
    as ``data=<its dataset>`` would compose it (this machine's paths), with the data.key=value
    given on the command line; None for any other weights."""
    name, weights = cfg.model.get("name"), cfg.model.get("weights")
    if not isinstance(weights, str) or not trained_weights.weight_sets(name):
        return None
    card_data = models.pretrained(name, weights).data  # an unknown name: the model's names
    if card_data is None:
        return None
    group = OmegaConf.load(CONFIG_DIR / "data" / f"{card_data['name']}.yaml")
    typed = to_plain(cfg.get("data")) or {}
    given = {key: value for key, value in typed.items() if value is not None}
    return OmegaConf.merge(group, card_data, given)


def published_weights(cfg: DictConfig) -> Checkpoint:
    """What a checkpoint would give for the model and weights ``model=`` names."""
    check_source(cfg)
    spec = to_plain(cfg.model)
    if not spec.get("weights"):
        raise ConfigError(f"{USAGE}: model.weights is null")
    data = to_plain(cfg.data)
    module = build_task(spec, {}, None, data, {})
    if module.fresh_tensors:
        # Right for fine-tuning, where training fills them; here nothing would.
        fresh = module.fresh_tensors
        shown = ", ".join(fresh[:4]) + (", ..." if len(fresh) > 4 else "")
        raise WeightsError(
            f"model.weights={spec['weights']} does not fill {module.model.display_name} with "
            f"{module.model.num_classes} classes: {len(fresh)} tensors ({shown}) "
            "would keep their random initialisation, and evaluating them measures a network "
            "nobody trained; fine-tune it with train.py first, or give weights for these classes"
        )
    hparams = dict(module.hparams)
    return Checkpoint(module.eval(), hparams, dict(hparams.get("data") or data))
