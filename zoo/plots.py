"""Figures for TensorBoard: labelled image grids (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: training boxes and CI have no display

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure


def labelled_grid(
    images: torch.Tensor,
    titles: Sequence[str],
    colors: Sequence[str] | None = None,
    columns: int = 8,
) -> Figure:
    """A grid of images (N, C, H, W), each with a short title such as 'pred 3 / true 5'."""
    images = images.detach().float().cpu()
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= count:
            continue
        image = images[i]
        # Per-image min-max scaling undoes any normalisation well enough to look at.
        image = (image - image.min()) / (image.max() - image.min() + 1e-8)
        if image.shape[0] == 1:
            ax.imshow(image[0], cmap="gray")
        else:
            ax.imshow(image[:3].permute(1, 2, 0))
        ax.set_title(titles[i], fontsize=8, color=colors[i] if colors else "black")
    fig.tight_layout()
    return fig


def prediction_titles(
    preds: torch.Tensor, targets: torch.Tensor, class_names: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Titles 'pred X / true Y', green when right and red when wrong."""

    def name(index: int) -> str:
        return class_names[index] if class_names else str(index)

    titles, colors = [], []
    for p, t in zip(preds.tolist(), targets.tolist(), strict=True):
        titles.append(f"pred {name(p)} / true {name(t)}")
        colors.append("green" if p == t else "red")
    return titles, colors
