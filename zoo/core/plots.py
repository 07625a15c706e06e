"""Figures for TensorBoard (matplotlib, headless): labelled image grids, segmentation overlays,
and the one place that hands a figure to the run's TensorBoard loggers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: training boxes and CI have no display

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pytorch_lightning.loggers import Logger, TensorBoardLogger


def labelled_grid(
    images: torch.Tensor,
    titles: Sequence[str],
    colors: Sequence[str] | None = None,
    columns: int = 8,
    rescale: bool = True,
) -> Figure:
    """A grid of images (N, C, H, W), each with a short title such as 'pred 3 / true 5'.

    ``rescale=False`` shows images already in [0, 1] on that fixed scale. The grid is laid out
    by hand on one axes filling the figure: calling ``tight_layout`` on it changes nothing and
    makes matplotlib warn that the axes is not compatible with it.
    """
    images = images.detach().float().cpu()
    count, _, height, width = images.shape
    rows = max(1, -(-count // columns))
    # One axes holding every image at its own place, not a subplot per image: a 2 x 8 grid of
    # subplots took 270 ms to build and render (tight_layout included) against 72 ms, and
    # classification draws one every validation epoch.
    gap, band = 0.1 * width, 0.35 * height  # between images; above each, for its title
    cell_width, cell_height = width + gap, height + band
    grid_width, grid_height = columns * cell_width, rows * cell_height + gap / 2
    inches = 1.6 / cell_width
    fig = plt.figure(figsize=(inches * grid_width, inches * grid_height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.axis("off")
    for i, image in enumerate(images):
        if rescale:
            # Per-image min-max scaling undoes any normalisation well enough to look at.
            image = (image - image.min()) / (image.max() - image.min() + 1e-8)
        row, column = divmod(i, columns)
        left, top = column * cell_width + gap / 2, row * cell_height + band
        extent = (left, left + width, top + height, top)
        if image.shape[0] == 1:
            ax.imshow(image[0].numpy(), cmap="gray", vmin=0.0, vmax=1.0, extent=extent)
        else:
            ax.imshow(image[:3].permute(1, 2, 0).numpy(), extent=extent)
        color = colors[i] if colors else "black"
        ax.text(
            left + width / 2,
            top - 0.1 * band,
            titles[i],
            ha="center",
            va="bottom",
            fontsize=8,
            color=color,
        )
    ax.set_xlim(0, grid_width)
    ax.set_ylim(grid_height, 0)
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


def class_colors(num_classes: int) -> torch.Tensor:
    """(num_classes, 4) RGBA: class 0 (background) clear, the others tab10/tab20 colours."""
    cmap = plt.get_cmap("tab10" if num_classes <= 11 else "tab20")
    colors = torch.tensor([cmap(i % cmap.N) for i in range(num_classes - 1)], dtype=torch.float32)
    return torch.cat([torch.zeros(1, 4), colors])


def segmentation_overlays(
    images: torch.Tensor,
    truth: torch.Tensor,
    preds: torch.Tensor,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.65,
) -> Figure:
    """One row per image (N, C, H, W): the input | the true mask over it | the predicted mask
    over it; masks (N, H, W) are class indices, background (0) left clear."""
    images = images.detach().float().cpu()
    truth, preds = truth.detach().long().cpu(), preds.detach().long().cpu()
    colors = class_colors(num_classes)
    colors[1:, 3] = alpha
    rows = len(images)
    fig, axes = plt.subplots(rows, 3, figsize=(6.0, 2.0 * rows + 0.6), squeeze=False)
    for i in range(rows):
        image = images[i]
        image = (image - image.min()) / (image.max() - image.min() + 1e-8)
        shown = (image[0] if image.shape[0] == 1 else image[:3].permute(1, 2, 0)).numpy()
        for column, mask in enumerate((None, truth[i], preds[i])):
            ax = axes[i, column]
            ax.axis("off")
            ax.imshow(shown, cmap="gray" if image.shape[0] == 1 else None)
            if mask is not None:
                overlay = colors[mask.clamp(0, num_classes - 1)].numpy()
                ax.imshow(overlay, interpolation="nearest")
    for ax, title in zip(axes[0], ("input", "truth", "prediction"), strict=True):
        ax.set_title(title, fontsize=9)
    shown_classes = torch.cat([truth.unique(), preds.unique()]).unique().tolist()
    handles = [
        Patch(color=colors[c, :3].tolist(), label=class_names[c] if class_names else str(c))
        for c in shown_classes
        if 0 < c < num_classes
    ]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=7)
    fig.tight_layout(rect=(0, 0.6 / (2.0 * rows + 0.6), 1, 1))
    return fig


def log_figure(
    loggers: Iterable[Logger], tag: str, figure: Figure, step: int | None = None
) -> None:
    """Add ``figure`` under ``tag`` to every TensorBoard logger (others take no figures), then
    close it: matplotlib keeps every open figure alive otherwise."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, figure, step)
    plt.close(figure)
