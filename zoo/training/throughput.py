"""Callbacks the configs refer to by class path."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import ThroughputMonitor


def images_in_batch(batch: Any) -> int:
    """Batches are (images, targets) tuples; the first dimension counts images."""
    return len(batch[0])


class ImagesPerSecond(ThroughputMonitor):
    """Lightning's ThroughputMonitor, told how to count images, so a config can name it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(batch_size_fn=images_in_batch, **kwargs)
