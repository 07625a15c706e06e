"""Preemption: on SIGTERM, last.ckpt at the next training batch boundary, then exit 143."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)

# What shells and schedulers report for a process ended by SIGTERM.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


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
