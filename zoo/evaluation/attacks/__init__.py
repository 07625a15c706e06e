"""The lecture's adversarial examples, as reports on evaluate.py's test loop (``attack=<name>``,
zoo/configs/attack/<name>.yaml; docs/robustness.md):

- ``fgsm``: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015);
- ``pgd``: projected gradient descent, L-infinity or L2, from a random start (Madry et al. 2018);
- ``lbfgs``: targeted minimal perturbations, box-constrained L-BFGS (Szegedy et al. 2013);
- ``universal``: one perturbation for all images, from DeepFool's (Moosavi-Dezfooli et al. 2017).

Budgets are in pixel units (images in [0, 1]); the perturbations themselves are
``zoo.tasks.adversarial``'s, the code adversarial training uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from rich.table import Table

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, is_integer, is_number, option
from zoo.evaluation.attacks.lbfgs import TARGETS, TargetedLBFGS, minimal_targeted
from zoo.evaluation.attacks.sweep import (
    AttackReport,
    EpsilonSweep,
    FGSMRobustness,
    PGDRobustness,
    accuracy_figure,
)
from zoo.evaluation.attacks.universal import (
    PERTURBATION_FILE,
    UniversalPerturbation,
    deepfool,
    universal_perturbation,
)
from zoo.tasks.adversarial import (
    EPS_BOUNDS,
    MAX_EPS,
    MAX_STEPS,
    NORMS,
    STEP_COST,
    PGDSettings,
    check_budgets,
    fgsm,
    pgd,
    pixel_normalization,
)

__all__ = [
    "ATTACKS",
    "PERTURBATION_FILE",
    "AttackReport",
    "EpsilonSweep",
    "FGSMConfig",
    "FGSMRobustness",
    "LBFGSConfig",
    "PGDConfig",
    "PGDRobustness",
    "TargetedLBFGS",
    "UniversalConfig",
    "UniversalPerturbation",
    "accuracy_figure",
    "attack_tables",
    "build_attack",
    "check_attack",
    "deepfool",
    "fgsm",
    "minimal_targeted",
    "pgd",
    "pixel_normalization",
    "universal_perturbation",
]


def _budgets(value: Any) -> bool:
    # The norm's own limit is checked with the norm (check_budgets).
    return bool(value) and all(is_number(eps) and 0 <= eps <= MAX_EPS["l2"] for eps in value)


def _target(value: Any) -> bool:
    # The class index's range is checked against the checkpoint's model (TargetedLBFGS).
    return value in TARGETS or (is_integer(value) and value >= 0)


BUDGETS = f"a list of numbers in [0, 1] (pixel units; up to {MAX_EPS['l2']:,.0f} with norm=l2)"
# Each attack sweeps its budgets from 0 (the clean accuracy) up.
DEFAULT_BUDGETS = (0.0, 0.05, 0.1, 0.2, 0.3)
# 100 restarts of PGD-100 are 10^4 gradients per image.
MAX_RESTARTS = 100
RESTART_COST = "each is a whole PGD run on the images not yet fooled"
MAX_SEARCH_STEPS = 50
MAX_TRAIN_IMAGES = 10_000
HELD_AT_ONCE = "the images are held in memory at once"
MAX_PASSES = 100
# DeepFool crosses the nearest boundary in a few steps (the paper: 3 on average); each step is
# a backward pass per candidate class.
MAX_DEEPFOOL_STEPS = 1_000


@dataclass
class AttackConfig(Schema):
    """What every attack's config (zoo/configs/attack/<name>.yaml, less its ``name``) has: how many
    clean | perturbed | difference images its figure draws."""

    examples: int = option(8, ge=0)


@dataclass
class FGSMConfig(AttackConfig):
    """zoo/configs/attack/fgsm.yaml: FGSM's L-infinity budgets."""

    title: ClassVar[str] = "attack=fgsm"
    eps: list[float] = option(
        valid=_budgets, what=BUDGETS, default_factory=lambda: [*DEFAULT_BUDGETS]
    )

    def check(self, key: str) -> None:
        check_budgets(self.eps, "linf", key)


@dataclass
class PGDConfig(AttackConfig, PGDSettings):
    """zoo/configs/attack/pgd.yaml: PGD's budgets, its restarts and the seed of its random
    starts; steps, step_size, norm and random_start are adversarial training's schema
    (PGDSettings)."""

    title: ClassVar[str] = "attack=pgd"
    eps: list[float] = option(
        valid=_budgets, what=BUDGETS, default_factory=lambda: [*DEFAULT_BUDGETS]
    )
    # Madry et al. test with PGD-20.
    steps: int = option(20, ge=1, at_most=MAX_STEPS, why=STEP_COST)
    # Each restart from a fresh random start: an image counts as robust only if it survives all.
    restarts: int = option(1, ge=1, at_most=MAX_RESTARTS, why=RESTART_COST)
    seed: int = 0

    def check(self, key: str) -> None:
        check_budgets(self.eps, self.norm, key)
        if self.restarts > 1 and not self.random_start:
            raise ConfigError(
                f"{key}.restarts={self.restarts} needs {key}.random_start=true: without a random "
                "start every restart is the same attack"
            )


@dataclass
class LBFGSConfig(AttackConfig):
    """zoo/configs/attack/lbfgs.yaml: targeted minimal perturbations by box-constrained L-BFGS."""

    title: ClassVar[str] = "attack=lbfgs"
    target: str | int = option("next", valid=_target, what="next, every or a class index")
    initial_c: float = option(1.0, gt=0)
    # Each search step is a whole L-BFGS run, and c grows tenfold per step until one succeeds.
    search_steps: int = option(6, ge=1, at_most=MAX_SEARCH_STEPS)
    max_iterations: int = option(50, ge=1, at_most=MAX_STEPS, why=STEP_COST)


@dataclass
class UniversalConfig(AttackConfig):
    """zoo/configs/attack/universal.yaml: one perturbation for all images, from DeepFool's."""

    title: ClassVar[str] = "attack=universal"
    eps: float = option(0.2, ge=0, le=MAX_EPS["l2"], what=EPS_BOUNDS)
    norm: str = option("linf", choices=NORMS)
    # The paper builds v from 10,000 ImageNet images: 6 GB at 3 x 224 x 224, held at once.
    train_images: int = option(1000, ge=1, at_most=MAX_TRAIN_IMAGES, why=HELD_AT_ONCE)
    # Each pass runs DeepFool on every image v does not fool yet.
    max_passes: int = option(5, ge=1, at_most=MAX_PASSES)
    target_fooling_rate: float = option(0.8, ge=0, le=1)
    overshoot: float = option(0.02, ge=0)
    deepfool_steps: int = option(50, ge=1, at_most=MAX_DEEPFOOL_STEPS, why=STEP_COST)
    load: str | None = None  # a universal_perturbation.pt of an earlier run, or null

    def check(self, key: str) -> None:
        check_budgets(self.eps, self.norm, key)


# attack name -> the schema of its config: checked before the checkpoint is read.
ATTACK_CONFIGS: dict[str, type[AttackConfig]] = {
    "fgsm": FGSMConfig,
    "pgd": PGDConfig,
    "lbfgs": LBFGSConfig,
    "universal": UniversalConfig,
}
ATTACKS = tuple(ATTACK_CONFIGS)


def check_attack(attack: Mapping[str, Any]) -> AttackConfig:
    """The checked settings of the ``attack`` config (its ``name`` picks the schema);
    ConfigError for an unknown attack or an impossible setting, naming ``attack.<key>``."""
    name = attack.get("name")
    if name not in ATTACK_CONFIGS:
        raise ConfigError(f"attack must be one of {', '.join(ATTACKS)}, got {dict(attack)!r}")
    settings = {key: value for key, value in attack.items() if key != "name"}
    return ATTACK_CONFIGS[name].parse(settings, "attack")


def build_attack(
    attack: Mapping[str, Any],
    mean: torch.Tensor,
    std: torch.Tensor,
    num_classes: int,
    output_dir: Path,
) -> AttackReport:
    """The report callback of the ``attack`` config, checked (:func:`check_attack`)."""
    settings = check_attack(attack).to_dict()
    name = attack["name"]
    if name == "fgsm":
        return FGSMRobustness(mean=mean, std=std, **settings)
    if name == "pgd":
        return PGDRobustness(mean=mean, std=std, **settings)
    if name == "lbfgs":
        target = settings.pop("target", "next")
        return TargetedLBFGS(target, num_classes, mean, std, **settings)
    return UniversalPerturbation(mean=mean, std=std, output_dir=output_dir, **settings)


def attack_tables(report: Mapping[str, Any]) -> list[Table]:
    """The attack's results in ``report`` (evaluate.py's), as tables for the terminal."""
    tables = []
    for name in ("fgsm", "pgd"):
        if name in report:
            sweep = report[name]
            title = "FGSM"
            if name == "pgd":
                restarts = f", {sweep['restarts']} restarts" if sweep["restarts"] > 1 else ""
                title = f"PGD-{sweep['steps']}{restarts} ({sweep['norm']})"
            table = Table(title=f"{title} ({_attack_time(sweep)})")
            table.add_column("eps (pixels)", justify="right")
            table.add_column("accuracy", justify="right")
            table.add_row("clean", f"{report['acc']:.4f}")
            for eps, acc in zip(report[name]["eps"], report[name]["acc"], strict=True):
                table.add_row(f"{eps:g}", f"{acc:.4f}")
            tables.append(table)
    if "lbfgs" in report:
        lbfgs = report["lbfgs"]
        table = Table(title=f"L-BFGS, target {lbfgs['target']} ({_attack_time(lbfgs)})")
        for column in ("target", "attempts", "success rate", "mean L2", "median L2"):
            table.add_column(column, justify="right")
        rows = {**lbfgs["per_target"], "all": lbfgs}
        for name, row in rows.items():
            cells = [row["success_rate"], row["mean_l2"], row["median_l2"]]
            table.add_row(
                name, str(row["attempts"]), *("-" if c is None else f"{c:.4f}" for c in cells)
            )
        tables.append(table)
    if "universal" in report:
        universal = report["universal"]
        table = Table(title=f"Universal perturbation ({_attack_time(universal)})")
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row(f"{universal['norm']} eps", f"{universal['eps']:g}")
        table.add_row("fooling rate", f"{universal['fooling_rate']:.4f}")
        table.add_row("accuracy, clean", f"{report['acc']:.4f}")
        table.add_row("accuracy, with v", f"{universal['acc']:.4f}")
        tables.append(table)
    return tables


def _attack_time(attack: Mapping[str, Any]) -> str:
    """What an attack's ``seconds`` cover: the attack alone, not the test loop around it (whose
    throughput is the report's ``images_per_sec_attack_included``)."""
    return f"the attack alone: {attack['seconds']:.1f} s"
