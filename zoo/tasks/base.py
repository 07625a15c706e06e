"""What the zoo's LightningModules share: the constructor, the options every task takes (the
schema of zoo/configs/task/<task>.yaml's shared keys), the network from the registry, channels_last
and compile, the metric triple, figures, the optimizer and schedule, and the FLOPs Lightning's
ThroughputMonitor turns into MFU."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.throughput import measure_flops
from matplotlib.figure import Figure
from omegaconf import OmegaConf
from torchmetrics import MeanMetric, MetricCollection

from zoo import models
from zoo.core.errors import ConfigError
from zoo.core.lightning import attached_trainer, should_update_logs
from zoo.core.plots import log_figure
from zoo.core.schema import Schema, option
from zoo.data.base import ZooDataModule
from zoo.models.weights import load_pretrained
from zoo.tasks import finetune
from zoo.tasks.finetune import FinetuneOptions
from zoo.tasks.optim import build_optimizer, build_scheduler, parameter_groups

log = logging.getLogger(__name__)

# torch.compile's modes; reduce-overhead replays CUDA graphs, which takes the launch overhead out
# of a small model's step on a GPU.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

# The flat ``task:`` block of train.yaml before the task config group, which the checkpoints of
# that time hold as flat hyper-parameters: each key that moved into a block, and where it lives
# now. The other flat keys (label_smoothing, loss, ...) kept their names.
MOVED_KEYS: dict[str, str] = {
    "freeze": "finetune.freeze",
    "backbone_lr_scale": "finetune.backbone_lr_scale",
    "norm_weight_decay": "finetune.norm_weight_decay",
    "adversarial": "adversarial.method",
    **{
        f"adversarial_{key}": f"adversarial.{key}"
        for key in (
            "eps",
            "steps",
            "step_size",
            "norm",
            "random_start",
            "alpha",
            "val_steps",
            "val_batches",
        )
    },
    **{
        key: f"mixing.{key}" for key in ("mixup_alpha", "mixup_prob", "cutmix_alpha", "cutmix_prob")
    },
}


def nest_flat_options(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Task options in the old flat layout (``adversarial_eps``, ``freeze``, ...) in the nested
    one (``adversarial.eps``, ``finetune.freeze``, ...); the keys that did not move are kept as
    they are, for the schema to check."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        block, _, name = MOVED_KEYS.get(key, "").partition(".")
        if block:
            nested.setdefault(block, {})[name] = value
        else:
            nested[key] = value
    return nested


def _field_names(schema: type[Schema]) -> list[str]:
    return [field.name for field in dataclasses.fields(schema)]


@dataclasses.dataclass
class TaskOptions(Schema):
    """The options every task module takes: zoo/configs/task/<task>.yaml, the ``task`` group that
    each model's config picks (zoo/configs/model/<name>.yaml), checked against the schema of its
    task module (``ZooTask.options_type``), which extends this one with the task's own keys and
    blocks. A key of another task's module is refused, in one line naming that task."""

    label_smoothing: float = option(0.0, ge=0, lt=1)
    channels_last: bool = False
    # true: torch.compile the network; or a mode: reduce-overhead (CUDA graphs: what a small
    # model's step loses to kernel launches on a GPU), max-autotune, ...
    compile: bool | str = option(
        False,
        valid=lambda mode: mode in (False, True, *COMPILE_MODES),
        what=f"true, false or a torch.compile mode ({', '.join(COMPILE_MODES)})",
    )
    # Images drawn with their predictions in each validation's figure (0: none).
    log_images: int = option(16, ge=0)
    finetune: FinetuneOptions = option(default_factory=FinetuneOptions)

    @classmethod
    def parse(cls, node: Any, key: str) -> TaskOptions:
        """As :meth:`Schema.parse`; a key of the old flat layout (``task.freeze``,
        ``task.adversarial=pgd``) is refused naming where it lives now."""
        values = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        if isinstance(values, Mapping):
            for old, value in values.items():
                moved = MOVED_KEYS.get(old)
                if moved is not None and not isinstance(value, Mapping):
                    shown = "null" if value is None else value
                    raise ConfigError(f"{key}.{old}={shown} is now {key}.{moved}={shown}")
        return super().parse(node, key)

    @classmethod
    def unknown_key_message(cls, key: str, relative: str) -> str:
        """A key of another task's module names that task; one of no task says so."""
        from zoo.tasks import TASKS  # the registry of task modules imports this module

        name = relative.split(".", 1)[0]
        own = _field_names(cls)
        if name in own:  # a key inside one of this task's blocks: the block's own message
            return super().unknown_key_message(key, relative)
        mine = next((task for task, module in TASKS.items() if module.options_type is cls), None)
        listing = f"the {mine} task's options: {', '.join(own)}"
        takers = [
            task for task, module in TASKS.items() if name in _field_names(module.options_type)
        ]
        if not takers:
            return f"{key}.{name} is not an option of any task ({listing})"
        return (
            f"{key}.{name} is an option of {takers[0]} models; this is a {mine} model ({listing})"
        )


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
    """Base of the task modules: the constructor every task shares, the train/val/test metric
    collections, and figures for TensorBoard.

    The network is rebuilt from ``model`` = ``{"name": registry name, **plain arguments}``, and
    the optimizer and schedule from plain dicts, so a checkpoint's hyper-parameters are enough to
    rebuild the module through the registry alone. ``data`` is the run's plain data config, kept
    in the checkpoint so that evaluation can rebuild the same dataset and preprocessing.

    Subclasses set ``task`` (the models' ``task`` they accept) and ``options_type`` (the schema
    of their options, a :class:`TaskOptions`), and implement ``metrics`` and the steps. The
    options arrive checked (``options_type.parse``, as ``zoo.tasks.build`` does); the
    checkpoint's hyper-parameters hold them as plain data (``options.to_dict()``), beside the
    model, optimizer, scheduler and data configs.
    """

    task: ClassVar[str]
    options_type: ClassVar[type[TaskOptions]]
    options: TaskOptions
    # The network's tensors that ``model.weights`` left at their initialisation (a new head,
    # for training to fill); [] without weights.
    fresh_tensors: list[str]

    def __init__(
        self,
        model: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        options: TaskOptions | None = None,
    ) -> None:
        super().__init__()
        options = self.options_type() if options is None else options
        if not isinstance(options, self.options_type):
            raise TypeError(
                f"{type(self).__name__} takes {self.options_type.__name__}, got "
                f"{type(options).__name__}"
            )
        self.options = options
        # Plain data only: checkpoints are read weights-only (zoo.models.checkpoint).
        self.save_hyperparameters(
            {
                "model": dict(model),
                "optimizer": dict(optimizer),
                "scheduler": dict(scheduler) if scheduler else None,
                "data": dict(data) if data is not None else None,
                "options": options.to_dict(),
            }
        )
        self.build_network()
        num_classes = self.model.num_classes
        names = (data or {}).get("class_names")
        categories = self.pretrained.categories if self.pretrained is not None else None
        if not names and categories and len(categories) == num_classes:
            names = categories  # torchvision's weights, head kept: ImageNet's class names
        self.class_names: list[str] | None = [str(n) for n in names] if names else None
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for {num_classes} classes: {self.class_names}"
            )
        self.train_metrics = self.metrics(num_classes).clone(prefix="train/")
        self.val_metrics = self.metrics(num_classes).clone(prefix="val/")
        self.test_metrics = self.metrics(num_classes).clone(prefix="test/")
        # Each split's mean loss per epoch, summed across ranks by torchmetrics: Lightning's mean
        # of a logged tensor divides by the ranks' mean sample count, which it rounds down to an
        # integer under gloo (2.6.6: 201 test images on 2 ranks count as 200). No NaN check: it
        # reads the loss on the host (a GPU sync per step), and the finite guard watches it.
        self.train_mean_loss = MeanMetric(nan_strategy="disable")
        self.val_mean_loss = MeanMetric(nan_strategy="disable")
        self.test_mean_loss = MeanMetric(nan_strategy="disable")

    def metrics(self, num_classes: int) -> MetricCollection:
        """The metrics every split logs, under ``{split}/``."""
        raise NotImplementedError

    def names(self, datamodule: pl.LightningDataModule | None = None) -> list[str]:
        """The class names: the run's, else the zoo datamodule's (``ZooDataModule.class_names``:
        ImageNet subsets know theirs only once set up; default: the trainer's), else the class
        indices."""
        trainer = attached_trainer(self)
        if datamodule is None and trainer is not None:
            datamodule = trainer.datamodule
        known = datamodule.class_names if isinstance(datamodule, ZooDataModule) else None
        for names in (self.class_names, known):
            if names and len(names) == self.model.num_classes:
                return [str(name) for name in names]
        return [str(i) for i in range(self.model.num_classes)]

    def split_metrics(self, split: str) -> tuple[MetricCollection, MeanMetric]:
        """The split's metric collection and mean loss (``test`` also serves ``predict``)."""
        if split == "train":
            return self.train_metrics, self.train_mean_loss
        if split == "val":
            return self.val_metrics, self.val_mean_loss
        return self.test_metrics, self.test_mean_loss

    def logs_this_step(self) -> bool:
        """Whether the loggers write at the end of this training step: every
        ``trainer.log_every_n_steps`` steps, at the last one, and at every step of a
        ``fast_dev_run``. Lightning's own test, the one its LearningRateMonitor and
        ThroughputMonitor use. False without a Trainer (a module called on its own)."""
        trainer = attached_trainer(self)
        if trainer is None:
            return False
        return bool(trainer.fast_dev_run) or should_update_logs(trainer)

    def log_split(
        self, split: str, loss: torch.Tensor, outputs: torch.Tensor, targets: torch.Tensor
    ) -> None:
        """Add a batch to the split's metrics and mean loss, from ``outputs`` (what the metrics
        take: logits or predicted labels); :meth:`log_epoch` logs them once per epoch. In
        training, also log this step's ``train/loss`` at the steps the loggers write.

        Only ``update`` runs per batch: a metric called as a function also computes the
        batch's own value, and each ``self.log`` walks Lightning's result collection (about
        0.3 ms on a CPU), which nobody reads at the other steps."""
        metrics, mean_loss = self.split_metrics(split)
        metrics.update(outputs, targets)
        # The batch's mean once per image: batches weigh by their size with no weight argument,
        # which torchmetrics would copy to the device at every call (a sync), and which
        # nan_strategy="disable" drops anyway (1.9).
        mean_loss.update(loss.detach().expand(len(targets)))
        if split == "train" and self.logs_this_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=len(targets))

    def log_epoch(self, split: str) -> None:
        """Log the split's metrics and mean loss over the epoch, every rank's share in them;
        Lightning computes the metric objects, syncing them across ranks, and resets them. The
        training loss's mean is ``train/loss_epoch``, beside the per-step ``train/loss``."""
        metrics, mean_loss = self.split_metrics(split)
        if not mean_loss.update_called:
            return  # no batch this epoch (limit_val_batches=0, a skipped sanity check)
        name = "train/loss_epoch" if split == "train" else f"{split}/loss"
        self.log(name, mean_loss, prog_bar=split == "val")
        self.log_dict(metrics, prog_bar=split == "val")

    def on_train_epoch_end(self) -> None:
        self.log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self.log_epoch("test")

    def log_figure(self, tag: str, figure: Figure) -> None:
        log_figure(self.loggers, tag, figure, self.global_step)

    def wants_figures(self) -> bool:
        """Figures once per validation, from rank 0, not during the sanity check."""
        return (
            self.options.log_images > 0
            and not self.trainer.sanity_checking
            and self.trainer.is_global_zero
        )

    def build_network(self) -> None:
        spec = dict(self.hparams.model)
        name = spec.pop("name")
        weights = spec.pop("weights", None)
        self.pretrained = None if weights is None else models.pretrained(name, weights, **spec)
        if self.pretrained is not None:
            spec = self.pretrained.arguments  # with the weights' defaults (transform_input)
        if "weights" in self.hparams.model:
            # What the checkpoint rebuilds: the network the weights went into, without them
            # (its state_dict holds them), so evaluating it needs no weights file.
            self.hparams.model = {"name": name, **spec}
        self.model = models.build(name, **spec)
        self.fresh_tensors = (
            [] if self.pretrained is None else load_pretrained(self.model, self.pretrained)
        )
        # BatchNorm layers task.finetune.freeze keeps in eval mode, whatever train() says.
        freeze = self.options.finetune.freeze
        self._frozen_norms = finetune.freeze(self.model, freeze)
        for module in self._frozen_norms:
            module.eval()
        if freeze == "backbone" and self.pretrained is None:
            log.warning(
                "task.finetune.freeze=backbone without model.weights: the backbone stays random"
            )
        if self.model.task != self.task:
            raise ValueError(
                f"model {name!r} is a {self.model.task} network; "
                f"{type(self).__name__} needs a {self.task} network"
            )
        if self.options.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Kept out of the module tree so that state_dict keys never gain "_orig_mod.".
        self._compiled = []
        mode = self.options.compile
        if mode:
            self._compiled = [torch.compile(self.model, mode=None if mode is True else mode)]
        self._resumed_scheduler_states: list[dict[str, Any]] = []
        self._flops: dict[bool, int] = {}

    def forward(self, images: torch.Tensor) -> Any:
        if self.options.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return (self._compiled[0] if self._compiled else self.model)(images)

    @property
    def flops_per_batch(self) -> int | None:
        """Read by Lightning's ThroughputMonitor (``zoo.training.throughput.ImagesPerSecond``),
        which logs ``{stage}/device/flops_per_sec`` and, where the device's peak is known,
        ``.../mfu``: training batches count forward and backward, evaluation batches the forward
        pass."""
        return self._flops.get(self.training)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if not self._flops:
            shape = batch[0].shape
            self._flops = {
                mode: count_flops(self.hparams.model, shape, training=mode)
                for mode in (True, False)
            }

    def train(self, mode: bool = True) -> ZooTask:
        """Lightning puts the module into train mode at every epoch's start: the BatchNorm
        layers task.finetune.freeze froze go back to eval mode, so their statistics never change."""
        super().train(mode)
        for module in getattr(self, "_frozen_norms", ()):
            module.eval()
        return self

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Where the starting weights came from (plain strings): for the record only.
        if self.pretrained is not None:
            checkpoint["pretrained"] = self.pretrained.summary()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Kept to check, once the new schedule exists, that the resumed one still fits it.
        self._resumed_scheduler_states = checkpoint.get("lr_schedulers", [])

    def configure_optimizers(self) -> Any:
        groups = parameter_groups(
            self.model,
            finetune.heads(self.model),
            self.options.finetune.backbone_lr_scale,
            self.options.finetune.norm_weight_decay,
        )
        optimizer = build_optimizer(groups, self.hparams.optimizer)
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
