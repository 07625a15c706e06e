"""Exact resume: what Lightning's checkpoints leave out for a bitwise-exact ``ckpt_path=last``,
the RNG states and the position in the shuffled training order (README, "Fault tolerance")."""

from __future__ import annotations

import logging
import random
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from zoo.data.sampling import ResumableBatchSampler
from zoo.training.checkpoint_io import remove_stale_temp_files

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
    """The datamodule's resumable training order (zoo's datamodules have ``train_sampler``)."""
    sampler = getattr(getattr(trainer, "datamodule", None), "train_sampler", None)
    return sampler if isinstance(sampler, ResumableBatchSampler) else None


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
            seen = trainer.fit_loop.epoch_loop.batch_progress.current.processed
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
