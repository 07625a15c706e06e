"""Optimizers and LR schedulers from plain config dicts, each checked by its schema first.

Configs name them (``name: sgd``) rather than carrying a ``_target_`` class path, so the
hyper-parameters saved in a checkpoint stay plain data that nobody is tempted to instantiate.
Each option of zoo/configs/optimizer and zoo/configs/scheduler is a :class:`~zoo.core.schema.Schema`
below, whose fields are the keys that file may hold: :func:`parse_optimizer` and
:func:`parse_scheduler` check a config before any data is loaded, and
:func:`build_optimizer` / :func:`build_scheduler` read nothing but the checked objects.
"""

from __future__ import annotations

import abc
import dataclasses
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from omegaconf import MISSING, DictConfig
from torch import nn
from torch.optim import lr_scheduler

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, is_integer, is_number, option

MIN_ONECYCLE_STEPS = 20


def _in_unit_interval(value: Any) -> bool:
    return is_number(value) and 0 <= value < 1


@dataclasses.dataclass
class OptimizerConfig(Schema):
    """What every zoo/configs/optimizer option holds; each optimizer's subclass adds its own keys.

    The fields are the keyword arguments of the torch optimizer that a recipe sets, with torch's
    defaults; the bounds are those torch refuses only once training starts (and lr 0, eps 0,
    which would train nothing or divide by zero)."""

    # The torch class this config builds.
    optimizer: ClassVar[type[torch.optim.Optimizer]]

    name: str = ""
    lr: float = option(1e-3, gt=0)
    weight_decay: float = option(0.0, ge=0)
    # torch's implementation choice (None: torch picks); it changes speed, not results.
    foreach: bool | None = None

    def build(self, params: list[Any]) -> torch.optim.Optimizer:
        """The torch optimizer over ``params`` (parameters or param groups)."""
        kwargs = self.to_dict()
        del kwargs["name"]
        return self.optimizer(params, **kwargs)


@dataclasses.dataclass
class FusedOptimizerConfig(OptimizerConfig):
    """An optimizer torch also has as one fused kernel over every parameter."""

    fused: bool | None = None

    def check(self, key: str) -> None:
        if self.fused and self.foreach:
            # torch: "`fused` and `foreach` cannot be `True` together."
            raise ConfigError(f"{key}.fused and {key}.foreach are two implementations: set one")


@dataclasses.dataclass
class AdamConfig(FusedOptimizerConfig):
    """zoo/configs/optimizer/adam.yaml: torch.optim.Adam."""

    title = "optimizer=adam"
    optimizer = torch.optim.Adam

    name: str = "adam"
    betas: list[float] = option(
        default_factory=lambda: [0.9, 0.999],
        valid=lambda v: isinstance(v, list) and len(v) == 2 and all(map(_in_unit_interval, v)),
        what="two numbers in [0, 1)",
    )
    eps: float = option(1e-8, gt=0)
    amsgrad: bool = False

    def build(self, params: list[Any]) -> torch.optim.Optimizer:
        kwargs = self.to_dict()
        del kwargs["name"]
        return self.optimizer(params, **{**kwargs, "betas": tuple(self.betas)})


@dataclasses.dataclass
class AdamWConfig(AdamConfig):
    """zoo/configs/optimizer/adamw.yaml: torch.optim.AdamW (decoupled weight decay)."""

    title = "optimizer=adamw"
    optimizer = torch.optim.AdamW

    name: str = "adamw"
    weight_decay: float = option(1e-2, ge=0)


@dataclasses.dataclass
class SGDConfig(FusedOptimizerConfig):
    """zoo/configs/optimizer/sgd.yaml: torch.optim.SGD."""

    title = "optimizer=sgd"
    optimizer = torch.optim.SGD

    name: str = "sgd"
    momentum: float = option(0.0, ge=0, lt=1)
    dampening: float = option(0.0, ge=0, le=1)
    nesterov: bool = False

    def check(self, key: str) -> None:
        super().check(key)
        if self.nesterov and (self.momentum == 0 or self.dampening != 0):
            # torch: "Nesterov momentum requires a momentum and zero dampening".
            raise ConfigError(
                f"{key}.nesterov needs {key}.momentum > 0 and {key}.dampening 0, got momentum "
                f"{self.momentum:g} and dampening {self.dampening:g}"
            )


@dataclasses.dataclass
class RMSpropConfig(OptimizerConfig):
    """zoo/configs/optimizer/rmsprop.yaml: torch.optim.RMSprop."""

    title = "optimizer=rmsprop"
    optimizer = torch.optim.RMSprop

    name: str = "rmsprop"
    lr: float = option(1e-2, gt=0)
    # The smoothing constant of the squared-gradient average (1 would never update it).
    alpha: float = option(0.99, ge=0, lt=1)
    eps: float = option(1e-8, gt=0)
    momentum: float = option(0.0, ge=0, lt=1)
    centered: bool = False


OPTIMIZERS: dict[str, type[OptimizerConfig]] = {
    "sgd": SGDConfig,
    "adam": AdamConfig,
    "adamw": AdamWConfig,
    "rmsprop": RMSpropConfig,
}


@dataclasses.dataclass
class SchedulerConfig(Schema, abc.ABC):
    """What every zoo/configs/scheduler option holds (none.yaml, a constant rate, holds nothing),
    and builds."""

    name: str = ""

    @abc.abstractmethod
    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
    ) -> dict[str, Any]:
        """A Lightning ``lr_scheduler`` dict for ``optimizer``, in a run of ``total_steps``
        optimizer steps, ``steps_per_epoch`` an epoch."""


@dataclasses.dataclass
class StepConfig(SchedulerConfig):
    """zoo/configs/scheduler/step.yaml: lr x gamma every ``step_size`` epochs (StepLR)."""

    title = "scheduler=step"

    name: str = "step"
    step_size: int = option(MISSING, ge=1)
    gamma: float = option(0.1, gt=0)

    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
    ) -> dict[str, Any]:
        scheduler = lr_scheduler.StepLR(optimizer, step_size=self.step_size, gamma=self.gamma)
        return {"scheduler": scheduler, "interval": "epoch"}


def _milestones(value: Any) -> bool:
    return (
        isinstance(value, list)
        and all(is_integer(epoch) and epoch >= 1 for epoch in value)
        and all(a < b for a, b in itertools.pairwise(value))
    )


@dataclasses.dataclass
class MultiStepConfig(SchedulerConfig):
    """zoo/configs/scheduler/multistep.yaml: lr x gamma at each milestone epoch (MultiStepLR)."""

    title = "scheduler=multistep"

    name: str = "multistep"
    milestones: list[int] = option(
        MISSING, valid=_milestones, what="a list of epochs >= 1 in increasing order"
    )
    gamma: float = option(0.1, gt=0)

    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
    ) -> dict[str, Any]:
        scheduler = lr_scheduler.MultiStepLR(
            optimizer, milestones=list(self.milestones), gamma=self.gamma
        )
        return {"scheduler": scheduler, "interval": "epoch"}


@dataclasses.dataclass
class CosineConfig(SchedulerConfig):
    """zoo/configs/scheduler/cosine.yaml: a linear warm-up over ``warmup_epochs``, then cosine decay
    to ``min_lr``, stepped every batch over the trainer's estimate of the total steps."""

    title = "scheduler=cosine"

    name: str = "cosine"
    warmup_epochs: float = option(0.0, ge=0)
    min_lr: float = option(0.0, ge=0)

    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
    ) -> dict[str, Any]:
        warmup = round(self.warmup_epochs * steps_per_epoch)
        cosine = lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, total_steps - warmup), eta_min=self.min_lr
        )
        scheduler: lr_scheduler.LRScheduler = cosine
        if warmup > 0:
            ramp = lr_scheduler.LinearLR(optimizer, start_factor=1e-3, total_iters=warmup)
            scheduler = lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
        return {"scheduler": scheduler, "interval": "step"}


@dataclasses.dataclass
class OneCycleConfig(SchedulerConfig):
    """zoo/configs/scheduler/onecycle.yaml: Smith's one-cycle policy (OneCycleLR), stepped every
    batch over the trainer's estimate of the total steps."""

    title = "scheduler=onecycle"

    name: str = "onecycle"
    # The peak; null: each param group's own lr.
    max_lr: float | None = option(None, gt=0, what="a number > 0, or null for optimizer.lr")
    # The warm-up's share of the run.
    pct_start: float = option(0.3, gt=0, lt=1)
    anneal_strategy: str = option("cos", choices=("cos", "linear"))
    cycle_momentum: bool = True
    base_momentum: float = option(0.85, ge=0, lt=1)
    max_momentum: float = option(0.95, ge=0, lt=1)
    # The start is max_lr / div_factor; the end, the start / final_div_factor.
    div_factor: float = option(25.0, gt=0)
    final_div_factor: float = option(1e4, gt=0)
    three_phase: bool = False

    def check(self, key: str) -> None:
        if self.three_phase and self.pct_start >= 0.5:
            raise ConfigError(
                f"{key}.pct_start must be < 0.5 with {key}.three_phase: the warm-up and its "
                f"mirror take 2 x pct_start of the run, got {self.pct_start:g}"
            )

    def build(
        self, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int
    ) -> dict[str, Any]:
        # One peak per param group: the backbone's scaled as its lr is
        # (task.finetune.backbone_lr_scale).
        max_lr = [
            group["lr"] if self.max_lr is None else self.max_lr * group.get("lr_scale", 1.0)
            for group in optimizer.param_groups
        ]
        settings = self.to_dict()
        del settings["name"], settings["max_lr"]
        # OneCycleLR divides by the length of each phase: a debugging run of a few steps gets
        # a schedule planned for MIN_ONECYCLE_STEPS, of which it uses the first few.
        scheduler = lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(MIN_ONECYCLE_STEPS, total_steps), **settings
        )
        return {"scheduler": scheduler, "interval": "step"}


SCHEDULERS: dict[str, type[SchedulerConfig]] = {
    "step": StepConfig,
    "multistep": MultiStepConfig,
    "cosine": CosineConfig,
    "onecycle": OneCycleConfig,
}


def _named(
    spec: Mapping[str, Any] | DictConfig, key: str, options: Mapping[str, type[Schema]]
) -> type[Schema]:
    """The schema ``spec``'s name picks, or ConfigError naming ``key.name``."""
    name = spec.get("name") if isinstance(spec, Mapping) else None
    if name not in options:
        raise ConfigError(f"{key}.name must be one of {', '.join(options)}, got {name!r}")
    return options[name]


def parse_optimizer(
    spec: Mapping[str, Any] | DictConfig, key: str = "optimizer"
) -> OptimizerConfig:
    """``spec`` (zoo/configs/optimizer/<name>.yaml as composed, or the plain dict a checkpoint
    holds) checked by its optimizer's schema; ConfigError naming ``key.<field>`` otherwise."""
    schema = _named(spec, key, OPTIMIZERS)
    parsed = schema.parse(spec, key)
    assert isinstance(parsed, OptimizerConfig)
    return parsed


def parse_scheduler(
    spec: Mapping[str, Any] | DictConfig | None, key: str = "scheduler"
) -> SchedulerConfig | None:
    """``spec`` checked by its scheduler's schema, or None for a constant learning rate
    (scheduler=none: an empty group)."""
    if not spec:
        return None
    schema = _named(spec, key, SCHEDULERS)
    parsed = schema.parse(spec, key)
    assert isinstance(parsed, SchedulerConfig)
    return parsed


# Parameters of these layers count as norm parameters for task.finetune.norm_weight_decay, as in
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
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    spec: Mapping[str, Any] | DictConfig,
) -> torch.optim.Optimizer:
    """``{"name": "sgd", "lr": 0.01, ...}`` -> ``torch.optim.SGD(params, lr=0.01, ...)``, once
    :func:`parse_optimizer` has checked the spec.

    Param groups (``parameter_groups``) get ``lr * lr_scale`` each."""
    config = parse_optimizer(spec)
    params = list(params)
    for group in params:
        if isinstance(group, dict) and group.get("lr_scale", 1.0) != 1.0:
            group["lr"] = config.lr * group["lr_scale"]
    return config.build(params)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    spec: Mapping[str, Any] | DictConfig | None,
    total_steps: int,
    steps_per_epoch: int,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` dict, or None for a constant learning rate, once
    :func:`parse_scheduler` has checked the spec.

    Epoch-based recipes (step, multistep) step once an epoch; cosine and onecycle step every
    batch, with their lengths taken from the trainer's estimate of the total steps.
    """
    config = parse_scheduler(spec)
    if config is None:
        return None
    return config.build(optimizer, total_steps, steps_per_epoch)
