"""Callbacks that keep a run from being lost, or silently changed, by a kill, a preemption or a
diverging loss (README, "Fault tolerance").

- ResumeState: what Lightning's checkpoints leave out for a bitwise-exact ``ckpt_path=last``,
  the RNG states and the position in the shuffled training order;
- Preemption: on SIGTERM, last.ckpt at the next batch boundary, then exit 143;
- FiniteGuard: a NaN / inf loss stops the run, naming the step; non-finite weights are never
  saved.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import RunningStage, TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from zoo.checkpoint_io import remove_stale_temp_files
from zoo.data.sampling import ResumableBatchSampler

log = logging.getLogger(__name__)

# What shells and schedulers report for a process ended by SIGTERM.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


class NonFiniteError(RuntimeError):
    """The training loss or the weights became NaN or infinite."""


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


class Preemption(Callback):
    """On SIGTERM, save ``dirpath/filename.ckpt`` at the next training batch boundary and exit
    with 143, so that ``ckpt_path=last`` loses nothing and schedulers see the job as killed.

    Lightning's handler notes the SIGTERM; Lightning 2.6 then stops between batches, but saves
    nothing and exits 0. A SIGTERM during validation stops it there (Lightning's doing): the
    state can't be resumed exactly mid-validation, so the last periodic checkpoint stands.

    With several ranks, Lightning's handler broadcasts from inside the signal handler: when it
    interrupts another collective, or runs twice on a rank signalled twice (by the scheduler
    and by rank 0), the ranks deadlock. There, the signal is only noted, and the ranks agree on
    it at the next batch end (a SIGTERM during validation then waits for the next batch).
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._saved = False
        self._sigterm = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its handlers; it restores the previous ones at teardown.
        if trainer.world_size > 1 and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._note_sigterm)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._sigterm = True

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # Decided by all ranks together, since saving is collective.
        local = trainer.received_sigterm or self._sigterm
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            self._save(trainer)
            raise SIGTERMException(PREEMPTED_EXIT_CODE)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException):
            return
        exception.code = PREEMPTED_EXIT_CODE  # Lightning raises it with no code: exit 0
        if self._saved:
            return
        # Lightning raised it between batches or at an epoch's end: a resumable state. With
        # several ranks, they may not all be there: saving would wait for them forever.
        if trainer.state.stage == RunningStage.TRAINING and trainer.world_size == 1:
            self._save(trainer)
        elif trainer.is_global_zero:
            log.warning(
                f"SIGTERM during {trainer.state.stage}: no new checkpoint; "
                "ckpt_path=last resumes from the last one saved"
            )

    def _save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved = True
        if trainer.is_global_zero:
            log.warning(
                f"SIGTERM: saved {self.path} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); resume with ckpt_path=last in the same run directory"
            )


class FiniteGuard(Callback):
    """Stops training at the first NaN or infinite loss with a message naming the step, and
    refuses to save non-finite weights, as "best" or at all."""

    def __init__(self) -> None:
        self._step = 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The step this batch is logged at (global_step grows with the optimizer step).
        self._step = trainer.global_step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        local = not bool(torch.isfinite(loss.detach()).all())
        # Every rank stops together, or the others would wait for it forever.
        if trainer.strategy.reduce_boolean_decision(local, all=False):
            value = f" ({loss.item()})" if local else " (on another rank)"
            raise NonFiniteError(
                f"the training loss is not finite{value} at step {self._step} (epoch "
                f"{trainer.current_epoch}, batch {batch_idx}): training stopped, and nothing "
                "from this step was saved. Lower optimizer.lr or clip gradients "
                "(trainer.gradient_clip_val=1.0)"
            )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        bad = [
            name
            for name, tensor in checkpoint["state_dict"].items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
        if bad:
            raise NonFiniteError(
                f"{len(bad)} weight tensor(s) ({', '.join(bad[:3])}) are NaN or infinite at "
                f"step {trainer.global_step}: refusing to save them as a checkpoint"
            )
