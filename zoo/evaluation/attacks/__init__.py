"""The lecture's adversarial examples, as reports on evaluate.py's test loop (``attack=<name>``,
configs/attack/<name>.yaml; docs/robustness.md):

- ``fgsm``: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015);
- ``pgd``: projected gradient descent, L-infinity or L2, from a random start (Madry et al. 2018);
- ``lbfgs``: targeted minimal perturbations, box-constrained L-BFGS (Szegedy et al. 2013);
- ``universal``: one perturbation for all images, from DeepFool's (Moosavi-Dezfooli et al. 2017).

Budgets are in pixel units (images in [0, 1]); the perturbations themselves are
``zoo.tasks.adversarial``'s, the code adversarial training uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from rich.table import Table

from zoo.core.errors import ConfigError
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
from zoo.tasks.adversarial import NORMS, fgsm, pgd, pixel_normalization

ATTACKS = ("fgsm", "pgd", "lbfgs", "universal")

__all__ = [
    "ATTACKS",
    "PERTURBATION_FILE",
    "AttackReport",
    "EpsilonSweep",
    "FGSMRobustness",
    "PGDRobustness",
    "TargetedLBFGS",
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


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _eps(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


def _eps_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(_eps(e) for e in value)


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _integer(value) and value >= low


def _positive_or_null(value: Any) -> bool:
    return value is None or (_number(value) and value > 0)


def _fraction(value: Any) -> bool:
    return _number(value) and 0 <= value <= 1


def _norm(value: Any) -> bool:
    return value in NORMS


def _target(value: Any) -> bool:
    # The class index's range is checked against the checkpoint's model (build_attack).
    return value in TARGETS or (_integer(value) and value >= 0)


EPS_LIST = (_eps_list, "a list of numbers in [0, 1] (pixel units)")
COUNT = (_at_least(0), "an integer >= 0")
# attack name -> key -> (test, what is valid): checked before the checkpoint is read.
RULES: dict[str, dict[str, tuple[Callable[[Any], bool], str]]] = {
    "fgsm": {"eps": EPS_LIST, "examples": COUNT},
    "pgd": {
        "eps": EPS_LIST,
        "steps": (_at_least(1), "an integer >= 1"),
        "step_size": (_positive_or_null, "a number > 0, or null (2.5 * eps / steps)"),
        "norm": (_norm, f"one of {', '.join(NORMS)}"),
        "random_start": (lambda v: isinstance(v, bool), "true or false"),
        "seed": (_integer, "an integer"),
        "examples": COUNT,
    },
    "lbfgs": {
        "target": (_target, "next, every or a class index"),
        "initial_c": (lambda v: _number(v) and v > 0, "a number > 0"),
        "search_steps": (_at_least(1), "an integer >= 1"),
        "max_iterations": (_at_least(1), "an integer >= 1"),
        "examples": COUNT,
    },
    "universal": {
        "eps": (_eps, "a number in [0, 1] (pixel units)"),
        "norm": (_norm, f"one of {', '.join(NORMS)}"),
        "train_images": (_at_least(1), "an integer >= 1"),
        "max_passes": (_at_least(1), "an integer >= 1"),
        "target_fooling_rate": (_fraction, "a number in [0, 1]"),
        "overshoot": (lambda v: _number(v) and v >= 0, "a number >= 0"),
        "deepfool_steps": (_at_least(1), "an integer >= 1"),
        "load": (lambda v: v is None or isinstance(v, str), "a path or null"),
        "examples": COUNT,
    },
}


def check_attack(attack: Mapping[str, Any]) -> None:
    """ConfigError for an unknown attack or an impossible setting, naming ``attack.<key>``."""
    name = attack.get("name")
    if name not in ATTACKS:
        raise ConfigError(f"attack must be one of {', '.join(ATTACKS)}, got {dict(attack)!r}")
    rules = RULES[name]
    unknown = sorted(set(attack) - set(rules) - {"name"})
    if unknown:
        raise ConfigError(f"attack.{unknown[0]} is not a setting of attack={name}")
    for key, (valid, description) in rules.items():
        if key in attack and not valid(attack[key]):
            raise ConfigError(f"attack.{key} must be {description}, got {attack[key]!r}")


def build_attack(
    attack: Mapping[str, Any],
    mean: torch.Tensor,
    std: torch.Tensor,
    num_classes: int,
    output_dir: Path,
) -> AttackReport:
    """The report callback of the checked ``attack`` config."""
    check_attack(attack)
    settings = {key: value for key, value in attack.items() if key != "name"}
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
            table = Table(title=f"{name.upper()} ({report[name]['seconds']:.1f} s)")
            table.add_column("eps (pixels)", justify="right")
            table.add_column("accuracy", justify="right")
            table.add_row("clean", f"{report['acc']:.4f}")
            for eps, acc in zip(report[name]["eps"], report[name]["acc"], strict=True):
                table.add_row(f"{eps:g}", f"{acc:.4f}")
            tables.append(table)
    if "lbfgs" in report:
        lbfgs = report["lbfgs"]
        table = Table(title=f"L-BFGS, target {lbfgs['target']} ({lbfgs['seconds']:.1f} s)")
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
        table = Table(title=f"Universal perturbation ({universal['seconds']:.1f} s)")
        table.add_column("")
        table.add_column("value", justify="right")
        table.add_row(f"{universal['norm']} eps", f"{universal['eps']:g}")
        table.add_row("fooling rate", f"{universal['fooling_rate']:.4f}")
        table.add_row("accuracy, clean", f"{report['acc']:.4f}")
        table.add_row("accuracy, with v", f"{universal['acc']:.4f}")
        tables.append(table)
    return tables
