"""What the zoo's LightningModules share: the network from the registry, channels_last and
compile, the optimizer and schedule, and the FLOPs Lightning's ThroughputMonitor turns into MFU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import measure_flops

from zoo import models
from zoo.config import ConfigError
from zoo.optim import build_optimizer, build_scheduler


def count_flops(spec: Mapping[str, Any], input_shape: torch.Size, training: bool) -> int:
    """FLOPs of one batch of ``input_shape`` through the registry model ``spec``: forward and
    backward when ``training``, else forward only. Counted on the meta device, so it costs no
    memory and no compute, whatever the model and the device it trains on."""
    arguments = {key: value for key, value in spec.items() if key != "name"}
    with torch.device("meta"):
        model = models.build(spec["name"], **arguments)
        images = torch.empty(input_shape)
    model.train(training)

    def forward() -> torch.Tensor:
        outputs = model(images)
        # Auxiliary heads (GoogLeNet in training) are part of the step: keep them in the count.
        if isinstance(outputs, torch.Tensor):
            return outputs
        return sum(out.sum() for out in outputs if out is not None)

    return measure_flops(model, forward, loss_fn=torch.Tensor.sum if training else None)


class ZooTask(pl.LightningModule):
    """Base of the task modules. Subclasses set ``task`` (the models' ``task`` they accept), call
    ``save_hyperparameters()`` with ``model``, ``optimizer``, ``scheduler``, ``channels_last`` and
    ``compile`` among their arguments, then ``build_network()``."""

    task: ClassVar[str]

    def build_network(self) -> None:
        spec = dict(self.hparams.model)
        name = spec.pop("name")
        self.model = models.build(name, **spec)
        if self.model.task != self.task:
            raise ValueError(
                f"model {name!r} is a {self.model.task} network; "
                f"{type(self).__name__} needs a {self.task} network"
            )
        if self.hparams.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Kept out of the module tree so that state_dict keys never gain "_orig_mod.".
        self._compiled = [torch.compile(self.model)] if self.hparams.compile else []
        self._resumed_scheduler_states: list[dict[str, Any]] = []
        self._flops: dict[bool, int] = {}

    def forward(self, images: torch.Tensor) -> Any:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (self._compiled[0] if self._compiled else self.model)(images)

    @property
    def flops_per_batch(self) -> int | None:
        """Read by Lightning's ThroughputMonitor (zoo.callbacks.ImagesPerSecond), which logs
        ``{stage}/device/flops_per_sec`` and, where the device's peak is known, ``.../mfu``:
        training batches count forward and backward, evaluation batches the forward pass."""
        return self._flops.get(self.training)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self._flops:
            shape = batch[0].shape
            self._flops = {
                mode: count_flops(self.hparams.model, shape, training=mode)
                for mode in (True, False)
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Kept to check, once the new schedule exists, that the resumed one still fits it.
        self._resumed_scheduler_states = checkpoint.get("lr_schedulers", [])

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.hparams.optimizer)
        trainer = self.trainer
        total = int(trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, trainer.max_epochs or 1))
        scheduler = build_scheduler(optimizer, self.hparams.scheduler, total, per_epoch)
        length = getattr(scheduler["scheduler"], "total_steps", None) if scheduler else None
        for state in self._resumed_scheduler_states:
            planned = state.get("total_steps")
            if planned is not None and planned != length:
                # torch would fail mid-run with "Tried to step N times"; say why up front.
                raise ConfigError(
                    f"the checkpoint's onecycle schedule was planned for {planned} steps, this "
                    f"run needs {length}: resume with the same trainer.max_epochs, or use an "
                    "epoch-based scheduler (scheduler=step) to train longer"
                )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
