"""Szegedy et al. (2013), "Intriguing properties of neural networks": the smallest r that makes
the network say a chosen class, argmin ||r||^2 such that f(x + r) = target and x + r in [0, 1]^n.

As in the paper, the constraint f(x + r) = target becomes a penalty, and the box stays a hard
constraint: minimise ``||r||^2 + c * CE(f(x + r), target)`` subject to ``0 <= x + r <= 1`` with
box-constrained L-BFGS, and search over c for the smallest that succeeds (a bisection, once a
success brackets it; until then c grows tenfold), keeping each image's shortest successful r.

scipy's ``L-BFGS-B`` rather than ``torch.optim.LBFGS``: the box is its own bound constraint, so
the problem solved is the paper's; torch's L-BFGS has no bounds, and a change of variables
(x + r = (tanh(w) + 1) / 2, Carlini & Wagner) changes the problem and its minimiser's norm.
A batch of images is one problem, the sum of their objectives: they share no variables, so
the minimisers are the images' own, and one call per batch keeps 10,000 images feasible on a
CPU (the model runs a batch at a time; scipy's bookkeeping is a few vector operations).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np  # scipy's arrays
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from zoo.core.errors import ConfigError
from zoo.evaluation.attacks.sweep import AttackReport, examples_figure, titled
from zoo.tasks.adversarial import logits_of, pixel_box

TARGETS = ("next", "every")


def minimal_targeted(
    model: Any,
    pixels: torch.Tensor,
    targets: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    initial_c: float = 1.0,
    search_steps: int = 6,
    max_iterations: int = 50,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial pixels, success (N,)): per image the shortest r found with
    ``f(x + r) = targets`` (x itself where none was)."""
    try:  # scipy: in the dev and imagenet extras; only this attack needs it
        from scipy.optimize import Bounds, minimize
    except ImportError as err:
        raise ConfigError("attack=lbfgs needs scipy: pip install scipy (or '.[dev]')") from err

    shape, device = pixels.shape, pixels.device
    low, high = pixel_box(pixels)
    bounds = Bounds(low.flatten().double().cpu().numpy(), high.flatten().double().cpu().numpy())
    origin = pixels.detach().double().cpu().numpy().ravel()
    count = len(pixels)
    c = torch.full((count,), float(initial_c), dtype=torch.float64)
    lower = torch.zeros(count, dtype=torch.float64)
    upper = torch.full((count,), float("inf"), dtype=torch.float64)
    best = pixels.detach().clone()
    best_l2 = torch.full((count,), float("inf"), device=device)
    found = torch.zeros(count, dtype=torch.bool, device=device)

    def objective(flat: np.ndarray, weights: torch.Tensor) -> tuple[float, np.ndarray]:
        with torch.inference_mode(False), torch.enable_grad():
            x = torch.from_numpy(flat).view(shape).to(device, torch.float32).requires_grad_(True)
            logits = logits_of(model((x - mean.clone()) / std.clone())).float()
            penalty = F.cross_entropy(logits, targets.clone(), reduction="none")
            r = x - pixels.detach().clone()
            total = (r.flatten(1).pow(2).sum(dim=1) + weights * penalty).sum()
            (grad,) = torch.autograd.grad(total, x)
        return float(total.detach()), grad.double().cpu().numpy().ravel()

    for _ in range(search_steps):
        weights = c.to(device, torch.float32)
        result = minimize(
            objective,
            origin,
            args=(weights,),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iterations},
        )
        x = torch.from_numpy(result.x).view(shape).to(device, torch.float32)
        with torch.no_grad():
            success = logits_of(model((x - mean) / std)).argmax(dim=1) == targets
        l2 = (x - pixels).flatten(1).norm(dim=1)
        better = success & (l2 < best_l2)
        best[better], best_l2[better] = x[better], l2[better]
        found |= success
        succeeded = success.cpu()
        upper = torch.where(succeeded, torch.minimum(upper, c), upper)
        lower = torch.where(succeeded, lower, torch.maximum(lower, c))
        c = torch.where(upper.isinf(), c * 10, (lower + upper) / 2)
    return best, found


class TargetedLBFGS(AttackReport):
    """Targeted minimal perturbations of the test loop's images, towards the next class
    (``target: next``: (label + 1) mod K), every other class (``every``), or one class (an
    index). Reports the success rate and the mean and median L2 norm of r (pixel units,
    successful attacks only), overall and per target class; draws clean | adversarial | r."""

    tag = "lbfgs"

    def __init__(
        self,
        target: str | int,
        num_classes: int,
        mean: torch.Tensor,
        std: torch.Tensor,
        initial_c: float = 1.0,
        search_steps: int = 6,
        max_iterations: int = 50,
        examples: int = 8,
    ) -> None:
        super().__init__(mean, std, examples)
        if target not in TARGETS and not (
            isinstance(target, int) and not isinstance(target, bool) and 0 <= target < num_classes
        ):
            raise ConfigError(
                f"attack.target must be next, every or a class index in [0, {num_classes - 1}], "
                f"got {target!r}"
            )
        self.target, self.num_classes = target, num_classes
        self.options = {
            "initial_c": initial_c,
            "search_steps": search_steps,
            "max_iterations": max_iterations,
        }
        self.attempts = torch.zeros(num_classes, dtype=torch.long)
        self.norms: list[list[float]] = [[] for _ in range(num_classes)]

    def reset(self, device: torch.device) -> None:
        self.attempts = torch.zeros(self.num_classes, dtype=torch.long)
        self.norms = [[] for _ in range(self.num_classes)]

    def targets_of(self, labels: torch.Tensor) -> list[torch.Tensor]:
        """The target classes for the batch, one tensor per attack made on all its images."""
        if self.target == "next":
            return [(labels + 1) % self.num_classes]
        if self.target == "every":
            return [(labels + shift) % self.num_classes for shift in range(1, self.num_classes)]
        return [torch.full_like(labels, int(self.target))]

    def attack(
        self,
        module: pl.LightningModule,
        images: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        pixels = images.float() * self.std + self.mean
        for wanted in self.targets_of(targets):
            adversarial, success = minimal_targeted(
                module, pixels, wanted, self.mean, self.std, **self.options
            )
            l2 = (adversarial - pixels).flatten(1).norm(dim=1)
            self.attempts += torch.bincount(wanted.cpu(), minlength=self.num_classes)
            for cls, ok, norm in zip(wanted.tolist(), success.tolist(), l2.tolist(), strict=True):
                if ok:
                    self.norms[cls].append(norm)
            with torch.no_grad():
                preds = logits_of(module((adversarial - self.mean) / self.std)).argmax(dim=1)
            self.keep(
                clean=images,
                adversarial=(adversarial - self.mean) / self.std,
                clean_preds=logits.argmax(dim=1),
                adversarial_preds=preds,
                wanted=wanted,
            )

    @staticmethod
    def summary(norms: Sequence[float], attempts: int) -> dict[str, Any]:
        values = torch.tensor(list(norms), dtype=torch.float64)
        return {
            "attempts": int(attempts),
            "success_rate": len(norms) / attempts if attempts else None,
            "mean_l2": float(values.mean()) if len(norms) else None,
            "median_l2": float(values.median()) if len(norms) else None,
        }

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        everything = [norm for norms in self.norms for norm in norms]
        per_target = {
            name: self.summary(self.norms[i], int(self.attempts[i]))
            for i, name in enumerate(class_names)
        }
        return {
            "lbfgs": {
                "target": self.target,
                **self.summary(everything, int(self.attempts.sum())),
                "images": self.samples,
                "seconds": self.seconds,
                **self.options,
                "per_target": per_target,
            }
        }

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        if not self.shown:
            return {"lbfgs_examples": None}
        shown = self.shown
        clean, adversarial = self.pixels(shown["clean"]), self.pixels(shown["adversarial"])
        scale = float((adversarial - clean).abs().max())
        wanted = shown["wanted"]
        adversarial_titles = titled(shown["adversarial_preds"], wanted, "", class_names)
        adversarial_titles = (
            [
                f"target {class_names[t]}: {title}"
                for t, title in zip(wanted.tolist(), adversarial_titles[0], strict=True)
            ],
            adversarial_titles[1],
        )
        return {
            "lbfgs_examples": examples_figure(
                clean,
                adversarial,
                titled(shown["clean_preds"], shown["clean_preds"], "clean: ", class_names),
                adversarial_titles,
                scale=scale,
                title=f"Targeted L-BFGS (Szegedy et al. 2013), r drawn at +/-{scale:.2f}",
            )
        }
