"""Accuracy under an attack at each of a list of budgets: FGSM (Goodfellow, Shlens & Szegedy
2015) and PGD (Madry et al. 2018), both from ``zoo.tasks.adversarial``, the code adversarial
training uses. Also the figures every attack draws: clean | adversarial | perturbation rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure

from zoo.core.plots import labelled_grid
from zoo.evaluation.reports import Report
from zoo.tasks.adversarial import fgsm, pgd

# Restart r of PGD draws its starts from a generator seeded with seed + r * 2^32: no two
# (seed, restart) pairs of seeds below 2^32 share a stream.
RESTART_SEED_STRIDE = 2**32


def accuracy_figure(eps: Sequence[float], accuracy: Sequence[float], title: str = "FGSM") -> Figure:
    """Accuracy against eps: the lecture's robustness curve."""
    figure, ax = plt.subplots(figsize=(4.5, 3.2))
    ax.plot(list(eps), list(accuracy), marker="o")
    ax.set_xlabel("eps (pixel units)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    figure.tight_layout()
    return figure


def examples_figure(
    clean: torch.Tensor,
    adversarial: torch.Tensor,
    clean_titles: tuple[list[str], list[str]],
    adversarial_titles: tuple[list[str], list[str]],
    scale: float,
    title: str,
) -> Figure:
    """Rows: clean images, the adversarial ones and the perturbation, all in pixel units; the
    perturbation drawn on a fixed scale (grey = 0, white = +scale, black = -scale), unlike
    labelled_grid's per-image one, so that its sign reads as +/-."""
    difference = 0.5 + (adversarial - clean) / (2 * max(scale, 1e-8))
    columns = len(clean)
    figure = labelled_grid(
        torch.cat([clean.clamp(0, 1), adversarial.clamp(0, 1), difference.clamp(0, 1)]),
        clean_titles[0] + adversarial_titles[0] + ["perturbation"] * columns,
        clean_titles[1] + adversarial_titles[1] + ["black"] * columns,
        columns=columns,
        rescale=False,
    )
    figure.suptitle(title, fontsize=10)
    return figure


def titled(
    preds: torch.Tensor, right: torch.Tensor, label: str, class_names: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Titles ``label<class>``, green where ``preds`` equal ``right``, else red."""
    titles = [f"{label}{class_names[p]}" for p in preds.tolist()]
    return titles, ["green" if ok else "red" for ok in (preds == right).tolist()]


class AttackReport(Report):
    """What every attack report shares: the normalisation, the seconds its attack took over the
    whole loop (``seconds``, beside the loop's own throughput), and the examples it keeps."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, examples: int = 8) -> None:
        self.mean, self.std = mean, std
        self.examples = examples
        self.seconds = 0.0
        self.samples = 0
        self.shown: dict[str, torch.Tensor] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.mean, self.std = self.mean.to(pl_module.device), self.std.to(pl_module.device)
        self.seconds = 0.0
        self.samples = 0
        self.shown = {}
        self.reset(pl_module.device)

    def reset(self, device: torch.device) -> None:
        """Clear the counts before a loop."""

    def update(
        self, trainer: pl.Trainer, module: pl.LightningModule, logits: torch.Tensor, batch: Any
    ) -> None:
        started = time.perf_counter()
        # Under the precision the clean forward pass ran at (bf16 autocast, say): Lightning
        # applies it to the test step, not to callbacks.
        with trainer.precision_plugin.forward_context():
            self.attack(module, batch[0], batch[1], logits)
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.seconds += time.perf_counter() - started
        self.samples += len(batch[1])

    def attack(
        self,
        module: pl.LightningModule,
        images: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        raise NotImplementedError

    def keep(self, **shown: torch.Tensor) -> None:
        """The first batch's first ``examples`` samples, for the examples figure."""
        if not self.shown and self.examples > 0:
            self.shown = {
                key: value[: self.examples].detach().cpu() for key, value in shown.items()
            }

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        return images.float() * self.std.cpu() + self.mean.cpu()


class EpsilonSweep(AttackReport):
    """Accuracy of a classifier under the attack at each ``eps``, on the test loop's own
    batches, and a few examples at the largest eps (``<tag>_examples``, ``<tag>_accuracy``).
    Needs a Trainer built with ``inference_mode=False``: attacks take gradients with respect to
    the images."""

    title = ""

    def __init__(
        self, eps: Sequence[float], mean: torch.Tensor, std: torch.Tensor, examples: int = 8
    ) -> None:
        super().__init__(mean, std, examples)
        self.eps = [float(e) for e in eps]
        self.correct = torch.zeros(len(self.eps), dtype=torch.long)

    def reset(self, device: torch.device) -> None:
        self.correct = torch.zeros(len(self.eps), dtype=torch.long, device=device)

    def perturb(
        self, module: pl.LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> list[torch.Tensor]:
        """One normalised adversarial batch per eps."""
        raise NotImplementedError

    def attack(
        self,
        module: pl.LightningModule,
        images: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        adversarial = self.perturb(module, images, targets)
        with torch.no_grad():
            preds = torch.stack([module(x).argmax(dim=1) for x in adversarial])
        self.correct += (preds == targets).sum(dim=1)
        self.keep(
            clean=images,
            adversarial=adversarial[-1],
            clean_preds=logits.argmax(dim=1),
            adversarial_preds=preds[-1],
            targets=targets,
        )

    def accuracy(self) -> list[float]:
        return (self.correct.float() / max(1, self.samples)).tolist()

    def settings(self) -> dict[str, Any]:
        return {}

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        return {
            self.tag: {
                "eps": self.eps,
                "acc": self.accuracy(),
                "samples": self.samples,
                "seconds": self.seconds,
                **self.settings(),
            }
        }

    def scalars(self) -> dict[str, float]:
        # One scalar per eps, named by it (fgsm/acc_eps_0.1), rather than eps as the step of
        # one fgsm/acc curve: logger steps are integers and eps (8/255, say) is not, and the
        # curve over eps is already the <tag>_accuracy figure.
        accuracy = self.accuracy()
        return {f"{self.tag}/acc_eps_{e:g}": a for e, a in zip(self.eps, accuracy, strict=True)}

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        return {
            f"{self.tag}_examples": self.examples_figure(class_names),
            f"{self.tag}_accuracy": accuracy_figure(self.eps, self.accuracy(), self.title),
        }

    def examples_figure(self, class_names: Sequence[str]) -> Figure | None:
        if not self.shown:
            return None
        shown, eps = self.shown, self.eps[-1]
        right = shown["targets"]
        return examples_figure(
            self.pixels(shown["clean"]),
            self.pixels(shown["adversarial"]),
            titled(shown["clean_preds"], right, "clean: ", class_names),
            titled(shown["adversarial_preds"], right, f"eps {eps:g}: ", class_names),
            scale=eps,
            title=f"{self.title}, eps = {eps:g} (pixels in [0, 1])",
        )


class FGSMRobustness(EpsilonSweep):
    """FGSM: every eps from one gradient of the loss."""

    tag = "fgsm"
    title = "FGSM"

    def perturb(
        self, module: pl.LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> list[torch.Tensor]:
        return fgsm(module, images, targets, self.eps, self.mean, self.std)


class PGDRobustness(EpsilonSweep):
    """PGD: ``steps`` projected steps per eps, L-infinity or L2, from a random start (seeded:
    ``seed``, so that a run repeats), ``restarts`` times: each restart from a fresh random start
    attacks the images that no restart before it has fooled, so that an image counts as robust
    only if it survives all of them."""

    tag = "pgd"

    def __init__(
        self,
        eps: Sequence[float],
        mean: torch.Tensor,
        std: torch.Tensor,
        steps: int = 20,
        step_size: float | None = None,
        norm: str = "linf",
        random_start: bool = True,
        restarts: int = 1,
        seed: int = 0,
        examples: int = 8,
    ) -> None:
        super().__init__(eps, mean, std, examples)
        self.steps, self.step_size, self.norm = steps, step_size, norm
        self.random_start, self.restarts, self.seed = random_start, restarts, seed
        restarted = f", {restarts} restarts" if restarts > 1 else ""
        self.title = f"PGD-{steps}{restarted} ({'L-inf' if norm == 'linf' else 'L2'})"
        self.generators: list[torch.Generator] = []

    def reset(self, device: torch.device) -> None:
        super().reset(device)
        # One generator per restart, the first seeded with ``seed`` itself: the first restart
        # then draws, batch after batch, exactly the starts of a run with restarts=1, and more
        # restarts can only lower its accuracy.
        self.generators = [
            torch.Generator(device).manual_seed(self.seed + restart * RESTART_SEED_STRIDE)
            for restart in range(self.restarts)
        ]

    def settings(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "step_size": self.step_size,
            "norm": self.norm,
            "random_start": self.random_start,
            "restarts": self.restarts,
        }

    def perturb(
        self, module: pl.LightningModule, images: torch.Tensor, targets: torch.Tensor
    ) -> list[torch.Tensor]:
        return [self.restarted(module, images, targets, eps) for eps in self.eps]

    def restarted(
        self, module: pl.LightningModule, images: torch.Tensor, targets: torch.Tensor, eps: float
    ) -> torch.Tensor:
        """The normalised batch after PGD at ``eps`` from each restart's random start in turn:
        each image keeps the first perturbation that fools the model, or the last one tried."""
        first, *others = self.generators
        adversarial = self.pgd(module, images, targets, eps, first)
        for generator in others:
            with torch.no_grad():
                robust = module(adversarial).argmax(dim=1) == targets
            if not robust.any():
                break
            adversarial[robust] = self.pgd(module, images[robust], targets[robust], eps, generator)
        return adversarial

    def pgd(
        self,
        module: pl.LightningModule,
        images: torch.Tensor,
        targets: torch.Tensor,
        eps: float,
        generator: torch.Generator,
    ) -> torch.Tensor:
        return pgd(
            module,
            images,
            targets,
            eps,
            self.mean,
            self.std,
            self.steps,
            self.step_size,
            self.norm,
            self.random_start,
            generator,
        )
