"""The model summary printed as a run starts, with the FLOPs counted.

Lightning's RichModelSummary counts FLOPs only by running the module's ``example_input_array``
through the datamodule's batch hooks, which take (images, targets) batches, not images alone;
without one it prints a FLOPs column of zeros. Here the network is built again on the meta device
and one image of the run's size is passed through it under torch's FlopCounterMode: no memory,
no compute, whatever the model.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_summary import get_human_readable_count
from torch.utils.flop_counter import FlopCounterMode

from zoo import models
from zoo.core.lightning import RichModelSummaryBase, summary_data
from zoo.tasks.base import ZooTask


def image_size(trainer: pl.Trainer, module: ZooTask) -> int:
    """The side of the run's images: the datamodule's, else the network's native one."""
    hparams = getattr(trainer.datamodule, "hparams", None) or {}
    return int(hparams.get("image_size") or module.model.native_input_size[0])


def forward_flops(module: ZooTask, size: int) -> dict[str, int]:
    """FLOPs of one ``size`` x ``size`` image through ``module.model`` in eval mode, per module
    of the task module (``"model"``, ``"model.features"``, ...)."""
    spec = dict(module.hparams.model)
    name = spec.pop("name")
    spec.pop("weights", None)  # the shapes are all the count needs: read no weights file
    with torch.device("meta"):
        network = models.build(name, **spec)
        image = torch.empty(1, network.in_channels, size, size)
    network.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        network(image)
    root = type(network).__name__
    return {
        "model" + key.removeprefix(root): sum(counts.values())
        for key, counts in counter.get_flop_counts().items()
        if key == root or key.startswith(f"{root}.")
    }


class ModelSummary(RichModelSummaryBase):
    """RichModelSummary whose FLOPs column and total are the forward pass of one image at the
    run's size (the training step costs about three times as much)."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.max_depth or not isinstance(pl_module, ZooTask):
            super().on_fit_start(trainer, pl_module)
            return
        summary = self.layer_summary(trainer, pl_module)
        flops = forward_flops(pl_module, image_size(trainer, pl_module))
        counts = [get_human_readable_count(flops.get(name, 0)) for name in summary.layer_names]
        data = [
            (column, counts if column == "FLOPs" else values)
            for column, values in summary_data(summary)
        ]
        if trainer.is_global_zero:
            self.print_summary(summary, data, total_flops=flops.get("model", 0))
