"""Fine-tuning: which of a network's parameters train, and which BatchNorm layers stay frozen.

``task.finetune.freeze``:

- ``none``: everything trains;
- ``backbone``: only the model's head (its ``head_names``: ResNet's ``fc``, VGG's and AlexNet's
  last linear layer, GoogLeNet's ``fc`` and auxiliary classifiers) trains; every other parameter
  stays out of the optimizer, and the backbone's BatchNorm layers stay in eval mode, so that
  their running statistics are the pretrained ones;
- ``bn``: every BatchNorm layer is frozen the same way (affine parameters out of the optimizer,
  running statistics fixed), the rest trains: the usual choice for small batches.

A frozen BatchNorm layer is put back into eval mode whenever the task module is put into train
mode (``ZooTask.train``), which Lightning does at every epoch's start.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from torch import nn

from zoo.core.schema import Schema, option
from zoo.models import ZooModel

FREEZE_MODES = ("none", "backbone", "bn")
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm,)


@dataclass
class FinetuneOptions(Schema):
    """``task.finetune``: what trains, at which learning rate and weight decay.

    ``freeze``: see above; frozen parameters stay out of the optimizer. The backbone's learning
    rate is optimizer.lr x ``backbone_lr_scale``, the head's optimizer.lr.
    ``norm_weight_decay``: weight decay of norm-layer and bias parameters (torchvision's
    --norm-weight-decay); null: the optimizer's weight_decay, like every other parameter."""

    freeze: str = option("none", choices=FREEZE_MODES)
    backbone_lr_scale: float = option(
        1.0, gt=0, what="a number > 0 (task.finetune.freeze=backbone to stop the backbone)"
    )
    norm_weight_decay: float | None = option(None, ge=0, what="null or a number >= 0")


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether the module or parameter ``name`` lies in one of the modules ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def heads(model: ZooModel) -> tuple[str, ...]:
    """The model's head modules that exist (GoogLeNet without aux_logits has no aux1)."""
    modules = dict(model.named_modules())
    return tuple(h for h in type(model).head_names if modules.get(h) is not None)


def freeze(model: ZooModel, mode: str) -> list[nn.Module]:
    """Stop the parameters ``mode`` freezes from training (``requires_grad=False``); return
    the BatchNorm layers that must stay in eval mode."""
    if mode == "none":
        return []
    # Lightning warns of modules in eval mode when fit() starts: here they are meant to be.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    norms = [(n, m) for n, m in model.named_modules() if isinstance(m, NORM_LAYERS)]
    if mode == "bn":
        for _, module in norms:
            module.requires_grad_(False)
        return [module for _, module in norms]
    trained = heads(model)
    if not trained:
        raise ValueError(
            f"task.finetune.freeze=backbone: {model.display_name} has no head to train"
        )
    for name, parameter in model.named_parameters():
        if not under(name, trained):
            parameter.requires_grad_(False)
    return [module for name, module in norms if not under(name, trained)]
