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
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

NORMS = ("linf", "l2")
# Madry et al.'s step: 2.5 * eps / steps reaches the ball's boundary from anywhere inside.
STEP_SIZE_FACTOR = 2.5

Model = Callable[[torch.Tensor], Any]


def pixel_normalization(
    datamodule: pl.LightningDataModule | None, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std), each (1, C, 1, 1), of the ``v2.Normalize`` that ends the datamodule's batch
    transform (``transform`` for MNIST, ``normalize`` for ImageNet); none: mean 0, std 1."""
    steps: list[Any] = []
    for name in ("transform", "normalize"):
        transform = getattr(datamodule, name, None)
        steps += getattr(transform, "transforms", [transform])
    norms = [step for step in steps if isinstance(step, v2.Normalize)]
    mean, std = (norms[-1].mean, norms[-1].std) if norms else ([0.0], [1.0])

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
        grad = input_gradient(model, adversarial, targets, mean, std)
        if norm == "linf":
            stepped = adversarial + size * grad.sign()
        else:
            stepped = adversarial + size * grad / per_sample_norm(grad).clamp(min=1e-12)
        delta = project(stepped - pixels, eps, norm)
        adversarial = torch.minimum(torch.maximum(pixels + delta, low), high)
    return images + (adversarial - pixels) / std


METHODS = ("fgsm", "pgd")
# Wong, Rice & Kolter (2020): FGSM from a random start steps by 1.25 * eps.
RANDOM_START_FGSM_STEP = 1.25


class Perturbation:
    """One attack's settings, checked once, applied to a batch: adversarial training's.

    ``fgsm``: one signed step of ``step_size`` (default ``eps``, or ``1.25 * eps`` from a random
    start, Wong et al. 2020's fast adversarial training); ``pgd``: ``steps`` steps (default step
    ``2.5 * eps / steps``), L-infinity or L2. ValueErrors name the ``task.adversarial_*`` keys."""

    def __init__(
        self,
        method: str,
        eps: float,
        steps: int = 7,
        step_size: float | None = None,
        norm: str = "linf",
        start: bool = True,
        prefix: str = "task.adversarial",
    ) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, int | float) and not isinstance(value, bool)

        if method not in METHODS:
            raise ValueError(
                f"{prefix} must be null or one of {', '.join(METHODS)}, got {method!r}"
            )
        if not number(eps) or not 0 <= eps <= 1:
            raise ValueError(f"{prefix}_eps must be a number in [0, 1] (pixel units), got {eps!r}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{prefix}_steps must be an integer >= 1, got {steps!r}")
        if step_size is not None and (not number(step_size) or step_size <= 0):
            raise ValueError(f"{prefix}_step_size must be a number > 0 or null, got {step_size!r}")
        if norm not in NORMS:
            raise ValueError(f"{prefix}_norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if method == "fgsm" and norm != "linf":
            raise ValueError(f"{prefix}=fgsm is an L-infinity attack: use pgd for L2")
        self.method, self.eps, self.norm, self.start = method, float(eps), norm, bool(start)
        self.steps = 1 if method == "fgsm" else steps
        if step_size is None and method == "fgsm":
            step_size = eps * (RANDOM_START_FGSM_STEP if start else 1.0)
        self.step_size = None if step_size is None else float(step_size)

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
