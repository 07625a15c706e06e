"""Exact resume: what Lightning's checkpoints leave out for a bitwise-exact ``ckpt_path=last``,
the RNG states and the position in the shuffled training order (README, "Fault tolerance"); and
the check that a resumed run's config continues its checkpoint's run, not another one."""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from zoo import data
from zoo.core.errors import ConfigError
from zoo.core.lightning import batches_processed_this_epoch
from zoo.data.base import ZooDataModule
from zoo.data.sampling import ResumableBatchSampler
from zoo.models.checkpoint import read_checkpoint
from zoo.models.loading import SizeLimit, check_values
from zoo.tasks.base import ZooTask
from zoo.training.checkpoint_io import remove_stale_temp_files
from zoo.training.ema import check_resumed_averaging

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """torch, CUDA, numpy and python RNG states, as tensors and numbers only: checkpoints
    holding them still load with ``weights_only=True`` (numpy's own state is an ndarray)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # A CUDA that was never initialised has drawn nothing; asking would initialise it.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {
            "version": version,
            "state": torch.tensor(python_state, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        # Applied lazily by torch if CUDA isn't initialised yet.
        torch.cuda.set_rng_state_all(states["cuda"][: torch.cuda.device_count()])
    numpy = states["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))


def train_sampler(trainer: pl.Trainer | None) -> ResumableBatchSampler | None:
    """The resumable training order of the trainer's datamodule (``ZooDataModule.train_sampler``);
    None without a zoo datamodule, or for one that shuffles otherwise."""
    datamodule = trainer.datamodule if trainer is not None else None
    return datamodule.train_sampler if isinstance(datamodule, ZooDataModule) else None


class ResumeState(Callback):
    """Saves the RNG states and the position in the shuffled order with every checkpoint, and
    restores them when the checkpoint is loaded, before anything draws a random number.

    Lightning checkpoints keep neither: without them, a run resumed mid-epoch replays the epoch's
    first batches, and dropout draws other masks. Also removes the temporary files of a save
    that a kill interrupted in an earlier run.
    """

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Before the checkpoint is restored: load_state_dict needs the trainer's datamodule.
        self._trainer = trainer
        if trainer.is_global_zero:
            for callback in trainer.checkpoint_callbacks:
                if getattr(callback, "dirpath", None):
                    remove_stale_temp_files(callback.dirpath)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": rng_states()}
        trainer, sampler = self._trainer, train_sampler(self._trainer)
        if trainer is not None and sampler is not None:
            epoch = trainer.current_epoch
            # Batches trained on this epoch, as Lightning counts them when it resumes.
            seen = batches_processed_this_epoch(trainer)
            if seen >= trainer.num_training_batches:
                epoch, seen = epoch + 1, 0
            state["data_order"] = {"seed": sampler.seed, "epoch": epoch, "batches_seen": seen}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        trainer = self._trainer
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return  # testing a checkpoint: nothing to continue
        set_rng_states(state_dict["rng"])
        order, sampler = state_dict.get("data_order"), train_sampler(trainer)
        if order is None or sampler is None:
            log.warning("the checkpoint's position in the training data can't be restored")
            return
        sampler.resume_at(**order)
        # Lightning only sees loaders with a state_dict as resumable; here the sampler is.
        warnings.filterwarnings(
            "ignore",
            message="You're resuming from a checkpoint that ended before the epoch ended",
            category=PossibleUserWarning,
        )


# What a resumed run must share with the checkpoint it continues, by config group (None: every
# key). The network: the weights must fit it and mean what they meant. The optimizer and the
# schedule: their restored state replaces the new values silently, or no longer fits them (SGD's
# momentum buffers are not in an Adam state). The data: the keys that its dataset's schema names
# (zoo.data.must_match: those that change the inputs' shape or the classes, or the training
# order that the saved position counts batches of).
MUST_MATCH: dict[str, tuple[str, ...] | None] = {
    "model": None,
    "optimizer": None,
    "scheduler": None,
}
_ABSENT = "(not set)"
# How the optimizer's arithmetic is laid out, not what it computes: a resume may change these
# (a run from before zoo/configs/optimizer/adam.yaml set fused: true resumes with it).
IMPLEMENTATION_ONLY = frozenset({"optimizer.fused", "optimizer.foreach"})


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        items = [_flat(v, f"{prefix}.{k}") for k, v in value.items()]
        return {key: leaf for item in items for key, leaf in item.items()} or {prefix: {}}
    return {prefix: value}


def config_mismatch(
    run: Mapping[str, Any], checkpoint: Mapping[str, Any]
) -> tuple[str, Any, Any] | None:
    """The first key of MUST_MATCH, or of the run's dataset's (``zoo.data.must_match``), whose
    value in this run's plain config ``run`` differs from the checkpoint's hyper-parameters, as
    ``(key, checkpoint's, run's)``; None if all agree."""
    dataset = (run.get("data") or {}).get("name")
    data_keys = data.must_match(dataset) if dataset in data.available() else ("name",)
    for group, keys in {**MUST_MATCH, "data": data_keys}.items():
        mine, theirs = run.get(group) or {}, checkpoint.get(group) or {}
        if keys is not None:
            mine = {k: mine.get(k, _ABSENT) for k in keys if k in mine or k in theirs}
            theirs = {k: theirs.get(k, _ABSENT) for k in mine}
        flat_mine, flat_theirs = _flat(mine, group), _flat(theirs, group)
        # The name first: another model or optimizer differs in its arguments too.
        name = f"{group}.name"
        compared = (flat_mine.keys() | flat_theirs.keys()) - IMPLEMENTATION_ONLY
        for key in sorted(compared, key=lambda k: (k != name, k)):
            new, old = flat_mine.get(key, _ABSENT), flat_theirs.get(key, _ABSENT)
            if new != old:
                return key, old, new
    return None


def check_resumable(run: Mapping[str, Any], checkpoint: Mapping[str, Any], path: Path) -> None:
    """ConfigError, naming the key, where this run's config would change what the checkpoint
    at ``path`` trained (its ``hyper_parameters``), instead of continuing it."""
    mismatch = config_mismatch(run, checkpoint)
    if mismatch is None:
        return
    key, old, new = mismatch
    raise ConfigError(
        f"{path} was trained with {key}={old!r}, this run has {key}={new!r}: a resume "
        "continues the checkpoint's run unchanged. Resume without that override, or start a "
        "fresh run (without ckpt_path, in a new hydra.run.dir) to train with it"
    )


def check_checkpoint(path: Path, module: ZooTask, averages: bool = False) -> None:
    """Refuse, in one line, a checkpoint that ``train.py ckpt_path=`` can't continue: unreadable,
    hostile or not a zoo checkpoint (``zoo.models.checkpoint``, as evaluate.py reads it), weights
    that are NaN, infinite or of the wrong kind (named), trained with another config than this
    run's ``module`` (check_resumable), or with callbacks=ema where this run has none, or the
    reverse (``averages``: this run has it). Lightning then reads it again to resume."""
    # No bigger than the optimizer state and averages of this run's model can make it.
    checkpoint = read_checkpoint(path, SizeLimit.of_model(module.model))
    check_resumable(dict(module.hparams), checkpoint.hparams, path)
    check_resumed_averaging(path, checkpoint.raw_weights is not None, averages)
    # The weights, and the raw weights beside an average (callbacks=ema) that training goes on
    # from.
    for weights in (checkpoint.weights, checkpoint.raw_weights):
        if weights is not None:
            check_values(module.model, weights, path)
