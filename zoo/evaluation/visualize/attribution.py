"""Which pixels a class score depends on: Simonyan et al.'s (2013) saliency |∂S_c/∂x|, max over
channels, and integrated gradients (Sundararajan et al. 2017), both from captum."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from captum.attr import IntegratedGradients, Saliency

from zoo.core.plots import labelled_grid
from zoo.core.schema import Schema, option
from zoo.evaluation.visualize.common import HELD_AT_ONCE, MAX_SAMPLES, Context, split_samples

ATTRIBUTIONS = ("saliency", "integrated_gradients")
# Integrated gradients' steps: ig_steps forward and backward passes per sample, and captum builds
# its inputs for all of them in Python lists first. Sundararajan et al. find 20 to 300 enough.
MAX_IG_STEPS = 1_000
# The drawn samples: a figure's columns.
MAX_SHOWN = 64


@dataclass
class SaliencyConfig(Schema):
    """zoo/configs/visualization/saliency.yaml."""

    samples: int = option(8, ge=1, at_most=MAX_SAMPLES, why=HELD_AT_ONCE)
    shown: int = option(8, ge=0, at_most=MAX_SHOWN, why="a figure's columns")
    methods: list[str] = option(
        default_factory=lambda: list(ATTRIBUTIONS),
        valid=lambda v: all(method in ATTRIBUTIONS for method in v),
        what=f"a list of methods among {', '.join(ATTRIBUTIONS)}",
    )
    ig_steps: int = option(
        32, ge=1, at_most=MAX_IG_STEPS, why="each is a forward and a backward pass per sample"
    )
    # null: don't measure the attribution on the ink against the background.
    ink_threshold: float | None = option(None, ge=0, what="a number >= 0 or null")


def saliency(ctx: Context, cfg: SaliencyConfig) -> dict[str, Any]:
    """Saliency and integrated-gradient maps of the predicted class for ``samples`` samples of
    the split (the first ``shown`` drawn); with ``ink_threshold``, each map's mean on pixels
    brighter than it (a digit's ink) over its mean on the rest."""
    shown, threshold = cfg.shown, cfg.ink_threshold
    images, labels = split_samples(ctx, count=cfg.samples)
    with torch.no_grad():
        preds = torch.cat([ctx.model(chunk).argmax(1) for chunk in images.split(256)])
    maps: dict[str, list[torch.Tensor]] = {method: [] for method in cfg.methods}
    low = ctx.bounds()[0].to(ctx.device)
    for chunk, target in zip(images.split(64), preds.split(64), strict=True):
        chunk = chunk.detach().clone().requires_grad_(True)
        if "saliency" in maps:
            grads = Saliency(ctx.model).attribute(chunk, target=target, abs=True)
            maps["saliency"].append(grads.amax(dim=1).detach())
        if "integrated_gradients" in maps:
            # The baseline is a black image in pixel space (MNIST's background).
            baseline = low.expand_as(chunk)
            ig = IntegratedGradients(ctx.model).attribute(
                chunk,
                baselines=baseline,
                target=target,
                n_steps=cfg.ig_steps,
                internal_batch_size=256,
            )
            maps["integrated_gradients"].append(ig.abs().amax(dim=1).detach())
    pixels = ctx.to_pixels(images)
    results: dict[str, Any] = {
        "samples": len(images),
        "target": "predicted class",
        "acc": float((preds == labels).float().mean()) if labels.dim() == 1 else None,
    }
    rows = [pixels[:shown].cpu()]
    titles = [f"pred {p}" for p in preds[:shown].tolist()]
    for method, parts in maps.items():
        heat = torch.cat(parts)
        entry: dict[str, Any] = {"mean": float(heat.mean())}
        if threshold is not None:
            ink = pixels.amax(dim=1) > threshold
            on, off = heat[ink].mean(), heat[~ink].mean()
            entry.update(ink_mean=float(on), background_mean=float(off))
            entry["ink_ratio"] = float(on / off.clamp_min(1e-12))
        results[method] = entry
        scale = heat[:shown].flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
        rows.append((heat[:shown] / scale).unsqueeze(1).cpu())
        titles += [method.replace("_", " ")] * len(rows[-1])
    if shown:
        channels = rows[0].shape[1]
        grid = torch.cat([rows[0], *(row.expand(-1, channels, -1, -1) for row in rows[1:])])
        figure = labelled_grid(
            grid,
            titles,
            columns=len(rows[0]),
            rescale=False,
        )
        figure.suptitle("saliency |dS_c/dx| (max over channels) and integrated gradients")
        results["png"] = ctx.save("saliency", figure)
    return results
