"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard 2017), built
from DeepFool's minimal perturbations (Moosavi-Dezfooli, Fawzi & Frossard 2016).

The lecture's algorithm: go through training images; wherever the current ``v`` does not yet
fool the network, add the image's minimal (DeepFool) perturbation at ``x + v`` and project ``v``
back onto the ball ``||v|| <= eps`` (L-infinity or L2); repeat passes until ``v`` fools
``target_fooling_rate`` of those images. The fooling rate is then measured on the test loop's
images: the share whose predicted class ``v`` changes.

By hand: neither torchvision nor captum has DeepFool or universal perturbations, and ART's
(adversarial-robustness-toolbox) wants its own estimator wrapper around the model and numpy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure

from zoo.core.errors import ConfigError
from zoo.core.plots import labelled_grid
from zoo.evaluation.attacks.sweep import AttackReport, examples_figure, titled
from zoo.models.loading import SizeLimit, safe_load
from zoo.tasks.adversarial import logits_of, pixel_box, project

PERTURBATION_FILE = "universal_perturbation.pt"
NORM_NAMES = {"linf": "L∞", "l2": "L2"}
# v is projected onto the ball in float32: its norm may pass eps by a rounding error.
EPS_TOLERANCE = 1e-5


def class_gradients(
    model: Any, pixels: torch.Tensor, classes: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, K), gradients (N, K, C, H, W)) of each image's logits of ``classes`` (N, K)
    with respect to its pixels: one backward pass over K copies of every image."""
    count, k = classes.shape
    with torch.inference_mode(False), torch.enable_grad():
        copies = pixels.detach().clone().repeat_interleave(k, dim=0).requires_grad_(True)
        logits = logits_of(model((copies - mean.clone()) / std.clone())).float()
        chosen = logits.gather(1, classes.reshape(-1, 1))
        (grad,) = torch.autograd.grad(chosen.sum(), copies)
    return chosen.detach().view(count, k), grad.view(count, k, *pixels.shape[1:])


def deepfool(
    model: Any,
    pixels: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    overshoot: float = 0.02,
    steps: int = 50,
    candidates: int = 10,
) -> torch.Tensor:
    """DeepFool's minimal L2 perturbation (pixel units) of each image in ``pixels`` (N, C, H, W):
    linearise the network, step to the nearest linearised boundary among the ``candidates``
    classes with the highest clean logits, until the prediction changes; the sum, times
    ``1 + overshoot``. For an affine classifier the first step is exact: the distance
    ``|f_k - f_l| / ||w_k - w_l||`` to the nearest boundary."""
    with torch.no_grad():
        logits = logits_of(model((pixels - mean) / std)).float()
    k = min(candidates, logits.shape[1])
    classes = logits.topk(k, dim=1).indices  # column 0: the original prediction
    original = classes[:, 0]
    total = torch.zeros_like(pixels)
    active = torch.ones(len(pixels), dtype=torch.bool, device=pixels.device)
    for _ in range(steps):
        index = active.nonzero().squeeze(1)
        if len(index) == 0:
            break
        current = pixels[index] + (1 + overshoot) * total[index]
        with torch.no_grad():
            fooled = logits_of(model((current - mean) / std)).argmax(dim=1) != original[index]
        active[index[fooled]] = False
        index, current = index[~fooled], current[~fooled]
        if len(index) == 0:
            break
        values, grads = class_gradients(model, current, classes[index], mean, std)
        w = grads[:, 1:] - grads[:, :1]
        f = values[:, 1:] - values[:, :1]
        norms = w.flatten(2).norm(dim=2).clamp(min=1e-12)
        distance = f.abs() / norms
        nearest = distance.argmin(dim=1)
        rows = torch.arange(len(index), device=pixels.device)
        step = (distance[rows, nearest] + 1e-4) / norms[rows, nearest]
        total[index] += step.view(-1, *([1] * (pixels.dim() - 1))) * w[rows, nearest]
    return (1 + overshoot) * total


def universal_perturbation(
    model: Any,
    batches: Iterator[torch.Tensor],
    mean: torch.Tensor,
    std: torch.Tensor,
    eps: float,
    norm: str = "linf",
    images: int = 1000,
    max_passes: int = 5,
    target_fooling_rate: float = 0.8,
    overshoot: float = 0.02,
    deepfool_steps: int = 50,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """(v (1, C, H, W) in pixel units, a log of the passes) over the first ``images`` images of
    the normalised ``batches``, image by image as the paper's Algorithm 1."""
    chunks, count = [], 0
    for batch in batches:
        chunks.append(batch[: images - count] * std + mean)
        count += len(chunks[-1])
        if count >= images:
            break
    pixels = torch.cat(chunks)
    low, high = pixel_box(pixels)
    with torch.no_grad():
        clean = logits_of(model((pixels - mean) / std)).argmax(dim=1)
    v = torch.zeros_like(pixels[:1])
    passes: list[float] = []
    for _ in range(max_passes):
        for i in range(len(pixels)):
            x = torch.minimum(torch.maximum(pixels[i : i + 1] + v, low[i : i + 1]), high[i : i + 1])
            with torch.no_grad():
                fooled = logits_of(model((x - mean) / std)).argmax(dim=1) != clean[i]
            if not fooled:
                r = deepfool(model, x, mean, std, overshoot, deepfool_steps)
                v = project(v + r, eps, norm)
        rate = fooling_rate(model, pixels, v, clean, mean, std)
        passes.append(rate)
        if rate >= target_fooling_rate:
            break
    return v, {"train_images": len(pixels), "passes": len(passes), "train_fooling_rate": passes}


def apply(pixels: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``x + v`` in the (widened) [0, 1] box."""
    low, high = pixel_box(pixels)
    return torch.minimum(torch.maximum(pixels + v, low), high)


def fooling_rate(
    model: Any,
    pixels: torch.Tensor,
    v: torch.Tensor,
    clean: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    chunk: int = 1000,
) -> float:
    """The share of images whose predicted class ``v`` changes."""
    changed = 0
    with torch.no_grad():
        for start in range(0, len(pixels), chunk):
            x = apply(pixels[start : start + chunk], v)
            preds = logits_of(model((x - mean) / std)).argmax(dim=1)
            changed += int((preds != clean[start : start + chunk]).sum())
    return changed / max(1, len(pixels))


def load_perturbation(path: Path, shape: Sequence[int], eps: float, norm: str) -> torch.Tensor:
    """A saved v (a plain tensor of the input's shape, pixel units), read weights-only, within
    the budget it is reported under: ``norm`` (linf or l2) at most ``eps``."""
    v = safe_load(path, "universal perturbation", SizeLimit.of_tensor((1, *shape)))
    if not isinstance(v, torch.Tensor) or not v.is_floating_point():
        raise ConfigError(f"{path} holds no float tensor: not a universal perturbation file")
    if v.dim() == len(shape):
        v = v.unsqueeze(0)
    if tuple(v.shape[1:]) != tuple(shape) or v.shape[0] != 1:
        raise ConfigError(
            f"{path}: a perturbation of shape {tuple(v.shape)}, where the model takes "
            f"images of {tuple(shape)}"
        )
    if not torch.isfinite(v).all():
        raise ConfigError(f"{path}: the perturbation holds NaN or infinity")
    # In float64, where no float32 perturbation's norm overflows; a float64 one's may.
    wide = v.double()
    size = float(wide.abs().max() if norm == "linf" else wide.norm())
    name = NORM_NAMES[norm]
    if not math.isfinite(size):
        raise ConfigError(f"{path}: the perturbation's {name} norm overflows: absurd values")
    if size > eps * (1 + EPS_TOLERANCE):
        raise ConfigError(
            f"{path}: the perturbation's {name} norm {size:.4g} is over attack.eps={eps:g} "
            f"(attack.norm={norm}): it would be reported under a budget it breaks"
        )
    return v.float()


class UniversalPerturbation(AttackReport):
    """One v for all images: computed on the train split (or ``load``-ed from a saved
    ``universal_perturbation.pt``), then applied to the test loop's images. Reports the fooling
    rate and the accuracy under v; saves v as ``universal_perturbation.pt`` (a plain tensor,
    (C, H, W), pixel units) and ``universal_perturbation.png``."""

    tag = "universal"

    def __init__(
        self,
        eps: float,
        mean: torch.Tensor,
        std: torch.Tensor,
        output_dir: Path,
        norm: str = "linf",
        train_images: int = 1000,
        max_passes: int = 5,
        target_fooling_rate: float = 0.8,
        overshoot: float = 0.02,
        deepfool_steps: int = 50,
        load: str | None = None,
        examples: int = 8,
    ) -> None:
        super().__init__(mean, std, examples)
        self.eps, self.norm, self.output_dir = float(eps), norm, output_dir
        self.options = {
            "images": train_images,
            "max_passes": max_passes,
            "target_fooling_rate": target_fooling_rate,
            "overshoot": overshoot,
            "deepfool_steps": deepfool_steps,
        }
        self.load = load
        self.v: torch.Tensor | None = None
        self.log: dict[str, Any] = {}
        self.fooled = self.correct = 0

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_test_epoch_start(trainer, pl_module)
        self.fooled = self.correct = 0
        started = time.perf_counter()
        if self.load:
            shape = self.input_shape(trainer)
            v = load_perturbation(Path(self.load), shape, self.eps, self.norm)
            self.v = v.to(pl_module.device)
            self.log = {"loaded": str(self.load)}
        else:
            self.v, self.log = universal_perturbation(
                pl_module,
                self.training_images(trainer, pl_module.device),
                self.mean,
                self.std,
                self.eps,
                self.norm,
                **self.options,
            )
        self.log["build_seconds"] = time.perf_counter() - started

    @staticmethod
    def input_shape(trainer: pl.Trainer) -> tuple[int, ...]:
        """(C, H, W) of the test loop's images."""
        datamodule = trainer.datamodule
        batch = next(iter(datamodule.test_dataloader()))
        batch = datamodule.on_after_batch_transfer(batch, 0)
        return tuple(batch[0].shape[1:])

    @staticmethod
    def training_images(trainer: pl.Trainer, device: torch.device) -> Iterator[torch.Tensor]:
        """Normalised train-split batches, preprocessed as the test batches are."""
        datamodule = trainer.datamodule
        datamodule.setup("fit")
        for batch in datamodule.train_dataloader():
            batch = datamodule.transfer_batch_to_device(batch, device, 0)
            yield datamodule.on_after_batch_transfer(batch, 0)[0]

    def attack(
        self,
        module: pl.LightningModule,
        images: torch.Tensor,
        targets: torch.Tensor,
        logits: torch.Tensor,
    ) -> None:
        assert self.v is not None
        clean = logits.argmax(dim=1)
        adversarial = (apply(images * self.std + self.mean, self.v) - self.mean) / self.std
        with torch.no_grad():
            preds = logits_of(module(adversarial)).argmax(dim=1)
        self.fooled += int((preds != clean).sum())
        self.correct += int((preds == targets).sum())
        self.keep(
            clean=images,
            adversarial=adversarial,
            clean_preds=clean,
            adversarial_preds=preds,
            targets=targets,
        )

    def report(self, trainer: pl.Trainer, class_names: Sequence[str]) -> dict[str, Any]:
        assert self.v is not None
        v = self.v.detach().cpu()[0]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        torch.save(v.clone(), self.output_dir / PERTURBATION_FILE)
        samples = max(1, self.samples)
        return {
            "universal": {
                "eps": self.eps,
                "norm": self.norm,
                "fooling_rate": self.fooled / samples,
                "acc": self.correct / samples,
                "samples": self.samples,
                "linf": float(v.abs().max()),
                "l2": float(v.norm()),
                "seconds": self.seconds + self.log.get("build_seconds", 0.0),
                "file": str(self.output_dir / PERTURBATION_FILE),
                **self.log,
            }
        }

    def figures(self, class_names: Sequence[str]) -> dict[str, Figure | None]:
        return {
            "universal_perturbation": self.perturbation_figure(),
            "universal_examples": self.examples_figure(class_names),
        }

    def scale(self) -> float:
        assert self.v is not None
        return self.eps if self.norm == "linf" else float(self.v.abs().max())

    def perturbation_figure(self) -> Figure | None:
        if self.v is None:
            return None
        image = 0.5 + self.v.detach().cpu() / (2 * max(self.scale(), 1e-8))
        figure = labelled_grid(
            image.clamp(0, 1), [f"v, {self.norm} eps {self.eps:g}"], columns=1, rescale=False
        )
        return figure

    def examples_figure(self, class_names: Sequence[str]) -> Figure | None:
        if not self.shown:
            return None
        shown = self.shown
        clean_preds = shown["clean_preds"]
        return examples_figure(
            self.pixels(shown["clean"]),
            self.pixels(shown["adversarial"]),
            titled(clean_preds, shown["targets"], "clean: ", class_names),
            titled(shown["adversarial_preds"], clean_preds, "with v: ", class_names),
            scale=self.scale(),
            title=f"Universal perturbation, {self.norm} eps = {self.eps:g} (pixels in [0, 1])",
        )
