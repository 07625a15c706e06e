"""Optimizers and LR schedulers from plain config dicts.

Configs name them (``name: sgd``) rather than carrying a ``_target_`` class path, so the
hyper-parameters saved in a checkpoint stay plain data that nobody is tempted to instantiate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}

SCHEDULERS = ("step", "multistep", "cosine", "onecycle")
MIN_ONECYCLE_STEPS = 20


# Parameters of these layers count as norm parameters for task.norm_weight_decay, as in
# torchvision's reference scripts (references/classification/utils.py, set_weight_decay).
NORM_CLASSES = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def parameter_groups(
    model: nn.Module,
    head_names: Sequence[str] = (),
    backbone_lr_scale: float = 1.0,
    norm_weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` as optimizer param groups.

    The backbone (what is not under ``head_names``) learns at ``backbone_lr_scale`` times the
    optimizer's lr (the group's ``lr_scale``); norm-layer and bias parameters get
    ``norm_weight_decay`` instead of the optimizer's weight decay when it is not None.
    Frozen parameters (``requires_grad=False``) are left out. With the defaults this is one
    group in ``model.parameters()`` order, so optimizer states of earlier runs still load.
    Hand-written: torchvision's ``set_weight_decay`` lives in its reference scripts, not in the
    package, and knows no backbone.
    """
    norm_parameters = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, NORM_CLASSES)
        for parameter in module.parameters(recurse=False)
    }
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        in_head = any(name == h or name.startswith(h + ".") for h in head_names)
        backbone = backbone_lr_scale != 1.0 and not in_head
        no_decay = norm_weight_decay is not None and (
            id(parameter) in norm_parameters or name.endswith(".bias")
        )
        groups.setdefault((backbone, no_decay), []).append(parameter)
    result = []
    for (backbone, no_decay), parameters in groups.items():
        group: dict[str, Any] = {
            "params": parameters,
            "name": f"{'backbone' if backbone else 'model'}{'_norm_bias' if no_decay else ''}",
            "lr_scale": backbone_lr_scale if backbone else 1.0,
        }
        if no_decay:
            group["weight_decay"] = norm_weight_decay
        result.append(group)
    if not result:
        raise ValueError("nothing to train: every parameter of the model is frozen")
    if len(result) == 1:
        # Unnamed, LearningRateMonitor keeps logging "lr-<Optimizer>" as before.
        del result[0]["name"]
    return result


def build_optimizer(
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]], spec: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """``{"name": "sgd", "lr": 0.01, ...}`` -> ``torch.optim.SGD(params, lr=0.01, ...)``.

    Param groups (``parameter_groups``) get ``lr * lr_scale`` each."""
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
    params = list(params)
    base_lr = kwargs.get("lr")
    for group in params:
        if isinstance(group, dict) and base_lr is not None and group.get("lr_scale", 1.0) != 1.0:
            group["lr"] = base_lr * group["lr_scale"]
    return OPTIMIZERS[name](params, **kwargs)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    spec: Mapping[str, Any] | None,
    total_steps: int,
    steps_per_epoch: int,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict, or None for a constant learning rate.

    Epoch-based recipes (step, multistep) step once an epoch; cosine and onecycle step every
    batch, with their lengths taken from the trainer's estimate of the total steps.
    """
    if not spec:
        return None
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name == "step":
        scheduler = lr_scheduler.StepLR(optimizer, **kwargs)
        interval = "epoch"
    elif name == "multistep":
        scheduler = lr_scheduler.MultiStepLR(optimizer, **kwargs)
        interval = "epoch"
    elif name == "cosine":
        warmup = round(kwargs.pop("warmup_epochs", 0) * steps_per_epoch)
        min_lr = kwargs.pop("min_lr", 0.0)
        if kwargs:
            raise ValueError(f"scheduler cosine got unknown argument(s) {sorted(kwargs)}")
        cosine = lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps - warmup), eta_min=min_lr
        )
        if warmup > 0:
            ramp = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
            scheduler = lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        else:
            scheduler = cosine
        interval = "step"
    elif name == "onecycle":
        # One peak per param group: the backbone's scaled as its lr is (task.backbone_lr_scale).
        peak = kwargs.pop("max_lr", None)
        max_lr = [
            peak * group.get("lr_scale", 1.0) if peak else group["lr"]
            for group in optimizer.param_groups
        ]
        # OneCycleLR divides by the length of each phase: a debugging run of a few steps gets
        # a schedule planned for MIN_ONECYCLE_STEPS, of which it uses the first few.
        scheduler = lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(MIN_ONECYCLE_STEPS, total_steps), **kwargs
        )
        interval = "step"
    else:
        raise ValueError(f"scheduler.name must be one of {SCHEDULERS}, got {name!r}")
    return {"scheduler": scheduler, "interval": interval}
