"""Adversarial perturbations in pixel space, the one implementation that adversarial training
(``ClassificationModule``, ``task.adversarial``) and evaluation (``zoo.evaluation.attacks``) share.

- ``fgsm``: the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015),
  ``x_adv = clip(x + eps * sign(grad_x loss), 0, 1)``;
- ``pgd``: projected gradient descent (Madry et al. 2018), L-infinity or L2, from a random point
  of the ball; FGSM with a random start (Wong, Rice & Kolter 2020) is its one-step case.

``eps`` is in pixel units (images in [0, 1], 0.1 = 25.5 grey levels). The networks see
normalised inputs, so the steps and the clip happen in pixel space and the result is normalised
again; ``pixel_normalization`` reads the (mean, std) from the datamodule.

Hand-written rather than taken from torchattacks or ART: those expect the model to take [0, 1]
pixels, run in their own loops, and pin old versions of shared packages (torchattacks 3.5.1
requires requests~=2.25.1), where training needs the attack inside its own step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from zoo.core.errors import ConfigError
from zoo.core.schema import Schema, option
from zoo.core.signals import check_stop
from zoo.data.base import ZooDataModule

NORMS = ("linf", "l2")
# Madry et al.'s step: 2.5 * eps / steps reaches the ball's boundary from anywhere inside.
STEP_SIZE_FACTOR = 2.5
METHODS = ("fgsm", "pgd")
# The most steps an attack may take: each is a forward and a backward pass of the network over
# the batch, so 10,000 of them take minutes on a GPU for the largest zoo models.
MAX_STEPS = 10_000
STEP_COST = "each is a forward and a backward pass"
# Budgets in pixel units: an L-infinity budget bounds each pixel's change, so 1 spans the whole
# range; an L2 budget bounds the distance between whole images, up to sqrt(values) in [0, 1]:
# 7,094 for 3 x 4,096 x 4,096 (max_image_size), over which no image can be reached.
MAX_EPS = {"linf": 1.0, "l2": 7_100.0}
EPS_BOUNDS = f"a number in [0, 1] (pixel units; up to {MAX_EPS['l2']:,.0f} with norm=l2)"


def check_budgets(eps: float | Sequence[float], norm: str, key: str) -> None:
    """ConfigError where a budget ``eps`` (a number or a list, checked finite and >= 0 by its
    schema) is over what ``norm`` can use: 1 for linf, MAX_EPS["l2"] for l2."""
    values = [eps] if isinstance(eps, int | float) else list(eps)
    limit = MAX_EPS[norm]
    if any(value > limit for value in values):
        what = "a number" if isinstance(eps, int | float) else "a list of numbers"
        raise ConfigError(
            f"{key}.eps must be {what} in [0, {limit:g}] (pixel units) with {key}.norm={norm}, "
            f"got {eps!r}"
        )


@dataclass
class PGDSettings(Schema):
    """What projected gradient descent takes besides its budget: the one schema of these keys,
    which adversarial training (``task.adversarial``, :class:`AdversarialOptions`) and the
    evaluation attack (zoo/configs/attack/pgd.yaml, ``zoo.evaluation.attacks``) both extend. Their
    budgets differ: one eps in training, a list of them in the attack's sweep."""

    # Madry et al. train with PGD-7 (the attack's config tests with 20).
    steps: int = option(7, ge=1, at_most=MAX_STEPS, why=STEP_COST)
    step_size: float | None = option(
        None, gt=0, what="a number > 0, or null (pgd: 2.5 * eps / steps)"
    )
    norm: str = option("linf", choices=NORMS)
    # From a uniformly random point of the eps-ball, else from the image itself.
    random_start: bool = True


@dataclass
class AdversarialOptions(PGDSettings):
    """``task.adversarial``: adversarial training of classifiers, off while ``method`` is null.

    The loss is ``alpha * J(x) + (1 - alpha) * J(x_adv)`` (Goodfellow et al. 2015), x_adv made
    afresh each step by ``method`` within ``eps`` (pixel units). ``val/robust_acc`` is the
    accuracy under PGD with ``val_steps`` steps at the same eps, on the first ``val_batches``
    validation batches (null: all of them)."""

    method: str | None = option(None, choices=(None, *METHODS), what="null (off) or fgsm, pgd")
    eps: float = option(0.1, ge=0, le=MAX_EPS["l2"], what=EPS_BOUNDS)
    alpha: float = option(0.5, ge=0, le=1)
    val_steps: int = option(10, ge=1, at_most=MAX_STEPS, why=STEP_COST)
    val_batches: int | None = option(None, ge=1, what="an integer >= 1, or null (all of them)")

    @property
    def enabled(self) -> bool:
        return self.method is not None

    def check(self, key: str) -> None:
        if self.method == "fgsm" and self.norm != "linf":
            raise ConfigError(f"{key}.method=fgsm is an L-infinity attack: use pgd for L2")
        check_budgets(self.eps, self.norm, key)


Model = Callable[[torch.Tensor], Any]


def pixel_normalization(
    datamodule: pl.LightningDataModule | None, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (1, C, 1, 1): the datamodule's normalisation in pixel units
    (``ZooDataModule.normalization``). None, a module used without data (called on its own):
    its inputs are taken as pixels, mean 0 and std 1. TypeError for any other datamodule, whose
    pixel space is unknown."""
    if datamodule is None:
        mean, std = (0.0,), (1.0,)
    elif isinstance(datamodule, ZooDataModule):
        mean, std = datamodule.normalization()
    else:
        raise TypeError(
            f"attacks work in pixel space, which only a zoo datamodule (zoo.data.ZooDataModule) "
            f"states; {type(datamodule).__name__} is not one"
        )

    def shaped(values: Sequence[float]) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32).expand(channels).view(1, -1, 1, 1)

    return shaped(mean), shaped(std)


def logits_of(outputs: Any) -> torch.Tensor:
    """The main logits: GoogLeNet in training mode also returns its auxiliary heads."""
    return outputs if isinstance(outputs, torch.Tensor) else outputs[0]


def pixel_box(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The [0, 1] box, widened where resampling left a pixel a rounding error outside it, so that
    a zero perturbation gives back exactly the clean batch."""
    return pixels.clamp(max=0.0), pixels.clamp(min=1.0)


def input_gradient(
    model: Model, pixels: torch.Tensor, targets: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """d(summed cross-entropy)/d(pixels); parameters' ``.grad`` are left alone.

    A sum, not a mean: only the direction matters, and a mean's tiny gradients can underflow to
    zero in half precision. Works inside an inference-mode loop (Lightning's validation)."""
    with torch.inference_mode(False), torch.enable_grad():
        # Clones: tensors made in inference mode cannot be saved for backward.
        inputs = pixels.detach().clone().requires_grad_(True)
        mean, std = mean.clone(), std.clone()
        logits = logits_of(model((inputs - mean) / std)).float()
        loss = F.cross_entropy(logits, targets.clone(), reduction="sum")
        (grad,) = torch.autograd.grad(loss, inputs)
    return grad


def fgsm(
    model: Model,
    images: torch.Tensor,
    targets: torch.Tensor,
    eps: Sequence[float],
    mean: torch.Tensor,
    std: torch.Tensor,
) -> list[torch.Tensor]:
    """One normalised adversarial batch per ``eps``, from a single gradient of the loss."""
    pixels = images * std + mean
    step = input_gradient(model, pixels, targets, mean, std).sign()
    low, high = pixel_box(pixels)
    return [
        images + (torch.minimum(torch.maximum(pixels + e * step, low), high) - pixels) / std
        for e in eps
    ]


def per_sample_norm(values: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each sample, shaped to broadcast against it."""
    return values.flatten(1).norm(dim=1).view(-1, *([1] * (values.dim() - 1)))


def project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    return delta * (eps / per_sample_norm(delta).clamp(min=1e-12)).clamp(max=1.0)


def random_start(
    pixels: torch.Tensor, eps: float, norm: str, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A point drawn uniformly from the ``norm`` ball of radius ``eps`` around each image."""
    shape, device = pixels.shape, pixels.device
    if norm == "linf":
        noise = torch.rand(shape, generator=generator, device=device, dtype=pixels.dtype)
        return (2 * noise - 1) * eps
    # Uniform in the L2 ball: a Gaussian direction, and a radius r ~ eps * U^(1/n).
    direction = torch.randn(shape, generator=generator, device=device, dtype=pixels.dtype)
    direction = direction / per_sample_norm(direction).clamp(min=1e-12)
    size = pixels[0].numel()
    uniform = torch.rand((shape[0],), generator=generator, device=device, dtype=pixels.dtype)
    radius = eps * uniform.pow(1.0 / size)
    return direction * radius.view(-1, *([1] * (pixels.dim() - 1)))


def pgd(
    model: Model,
    images: torch.Tensor,
    targets: torch.Tensor,
    eps: float,
    mean: torch.Tensor,
    std: torch.Tensor,
    steps: int = 20,
    step_size: float | None = None,
    norm: str = "linf",
    start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The normalised batch after ``steps`` steps of projected gradient ascent on the loss,
    within the ``norm`` ball of radius ``eps`` (pixels) and the [0, 1] box.

    L-infinity steps by ``step_size * sign(grad)``, L2 by ``step_size * grad / ||grad||``;
    ``step_size`` None: ``2.5 * eps / steps``. ``start``: from a uniformly random point of the
    ball (Madry et al.), else from the image itself. The model is used in whatever mode it is in
    (training: dropout and batch-norm statistics as Madry et al.'s training)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if eps == 0 or steps == 0:
        return images.clone()
    size = STEP_SIZE_FACTOR * eps / steps if step_size is None else step_size
    pixels = images * std + mean
    low, high = pixel_box(pixels)
    adversarial = pixels
    if start:
        adversarial = torch.minimum(
            torch.maximum(pixels + random_start(pixels, eps, norm, generator), low), high
        )
    for _ in range(steps):
        # Thousands of steps can make one training step minutes long: a SIGTERM or Ctrl-C
        # stops it here, not at the batch's end (zoo.training.preemption).
        check_stop()
        grad = input_gradient(model, adversarial, targets, mean, std)
        if norm == "linf":
            stepped = adversarial + size * grad.sign()
        else:
            stepped = adversarial + size * grad / per_sample_norm(grad).clamp(min=1e-12)
        delta = project(stepped - pixels, eps, norm)
        adversarial = torch.minimum(torch.maximum(pixels + delta, low), high)
    return images + (adversarial - pixels) / std


# Wong, Rice & Kolter (2020): FGSM from a random start steps by 1.25 * eps.
RANDOM_START_FGSM_STEP = 1.25


class Perturbation:
    """One attack's settings applied to a batch: adversarial training's (``fgsm`` or ``pgd``,
    checked by their schema, :class:`AdversarialOptions`).

    ``fgsm``: one signed step of ``step_size`` (default ``eps``, or ``1.25 * eps`` from a random
    start, Wong et al. 2020's fast adversarial training); ``pgd``: ``steps`` steps (default step
    ``2.5 * eps / steps``), L-infinity or L2."""

    def __init__(self, method: str, eps: float, settings: PGDSettings) -> None:
        self.method, self.eps = method, float(eps)
        self.norm, self.start = settings.norm, bool(settings.random_start)
        self.steps = 1 if method == "fgsm" else settings.steps
        step_size = settings.step_size
        if step_size is None and method == "fgsm":
            step_size = eps * (RANDOM_START_FGSM_STEP if self.start else 1.0)
        self.step_size = None if step_size is None else float(step_size)

    @classmethod
    def training(cls, options: AdversarialOptions) -> Perturbation:
        """The attack that adversarial training makes its examples with."""
        assert options.method is not None, "adversarial training is off"
        return cls(options.method, options.eps, options)

    @classmethod
    def validation(cls, options: AdversarialOptions) -> Perturbation:
        """The PGD that ``val/robust_acc`` is measured under: ``val_steps`` steps at the same
        eps and norm, from a random start."""
        return cls("pgd", options.eps, PGDSettings(steps=options.val_steps, norm=options.norm))

    def __call__(
        self,
        model: Model,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
    ) -> torch.Tensor:
        """The normalised adversarial batch."""
        return pgd(
            model,
            images,
            targets,
            self.eps,
            mean,
            std,
            self.steps,
            self.step_size,
            self.norm,
            self.start,
        )
