"""Optimizers and LR schedulers from plain config dicts.

Configs name them (``name: sgd``) rather than carrying a ``_target_`` class path, so the
hyper-parameters saved in a checkpoint stay plain data that nobody is tempted to instantiate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch.optim import lr_scheduler

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}

SCHEDULERS = ("step", "multistep", "cosine", "onecycle")
MIN_ONECYCLE_STEPS = 20


def build_optimizer(
    params: Iterable[torch.nn.Parameter], spec: Mapping[str, Any]
) -> torch.optim.Optimizer:
    """``{"name": "sgd", "lr": 0.01, ...}`` -> ``torch.optim.SGD(params, lr=0.01, ...)``."""
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer.name must be one of {sorted(OPTIMIZERS)}, got {name!r}")
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
        max_lr = kwargs.pop("max_lr", None) or optimizer.param_groups[0]["lr"]
        # OneCycleLR divides by the length of each phase: a debugging run of a few steps gets
        # a schedule planned for MIN_ONECYCLE_STEPS, of which it uses the first few.
        scheduler = lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(MIN_ONECYCLE_STEPS, total_steps), **kwargs
        )
        interval = "step"
    else:
        raise ValueError(f"scheduler.name must be one of {SCHEDULERS}, got {name!r}")
    return {"scheduler": scheduler, "interval": interval}
