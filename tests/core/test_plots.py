"""labelled_grid: every image drawn at its own place with its own title and colour, on the
fixed [0, 1] scale when asked, in one axes (a subplot per image took 4x as
long, every validation epoch)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from zoo.core.plots import labelled_grid


@pytest.mark.parametrize(("count", "channels", "columns"), [(16, 1, 8), (5, 3, 3), (1, 1, 8)])
def test_each_image_is_drawn_once_under_its_own_title(
    count: int, channels: int, columns: int
) -> None:
    images = torch.rand(count, channels, 12, 20)
    titles = [f"pred {i} / true {i + 1}" for i in range(count)]
    colors = ["green" if i % 2 else "red" for i in range(count)]
    figure = labelled_grid(images, titles, colors, columns=columns)
    try:
        (ax,) = figure.axes
        shown = ax.get_images()
        assert len(shown) == count
        assert [t.get_text() for t in ax.texts] == titles
        assert [t.get_color() for t in ax.texts] == colors
        # Image i sits in row i // columns, column i % columns; its title just above it.
        lefts = [image.get_extent()[0] for image in shown]
        tops = [image.get_extent()[3] for image in shown]
        assert lefts[: min(count, columns)] == sorted(set(lefts))
        for i in range(count):
            assert lefts[i] == lefts[i % columns]
            assert tops[i] == tops[(i // columns) * columns]
            left, right, _, top = shown[i].get_extent()
            x, y = ax.texts[i].get_position()
            assert left < x < right and y < top
        # Nothing drawn outside the axes' limits.
        x_max, y_max = ax.get_xlim()[1], ax.get_ylim()[0]
        assert max(image.get_extent()[1] for image in shown) <= x_max
        assert max(image.get_extent()[2] for image in shown) <= y_max
    finally:
        plt.close(figure)


def test_rescale_false_keeps_the_fixed_scale_and_true_stretches_each_image() -> None:
    images = torch.full((2, 1, 4, 4), 0.25)
    images[1, 0, 0, 0] = 0.75
    fixed = labelled_grid(images, ["a", "b"], rescale=False)
    stretched = labelled_grid(images, ["a", "b"])
    try:
        first = fixed.axes[0].get_images()[1].get_array()
        assert np.allclose([first.min(), first.max()], [0.25, 0.75])
        second = stretched.axes[0].get_images()[1].get_array()
        assert np.allclose([second.min(), second.max()], [0.0, 1.0], atol=1e-6)
    finally:
        plt.close(fixed)
        plt.close(stretched)
