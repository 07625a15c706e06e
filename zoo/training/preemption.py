"""Preemption and Ctrl-C: on SIGTERM or the first SIGINT, last.ckpt at the next training batch
boundary, then exit 143 or 130; inside a step that an attack's loop makes long, at once
(zoo.core.signals)."""

from __future__ import annotations

import logging
import re
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.exceptions import SIGTERMException

from zoo.core.signals import (
    INTERRUPTED_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    StopRequested,
    stop_requested,
)

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED_EXIT_CODE", "PREEMPTED_EXIT_CODE", "InterruptedExit", "Preemption"]

# An override that names the checkpoint to resume from: the resume command sets its own.
_CKPT_PATH_OVERRIDE = re.compile(r"\+{0,2}ckpt_path=")


class InterruptedExit(SystemExit):
    """Ends the run once a Ctrl-C's checkpoint is saved, with exit code 130."""


class Preemption(Callback):
    """On SIGTERM, save ``dirpath/filename.ckpt`` at the next training batch boundary and exit
    with 143, so that ``ckpt_path=last`` loses nothing and schedulers see the job as killed.

    Lightning's handler notes the SIGTERM; Lightning 2.6 then stops between batches, but saves
    nothing and exits 0. A SIGTERM during validation stops it there (Lightning's doing): the
    state can't be resumed exactly mid-validation, so the last periodic checkpoint stands.

    The first Ctrl-C (SIGINT) during training does the same through the same save, then prints
    the command that resumes and exits with 130; Lightning alone exits 1 and saves nothing. A
    Ctrl-C during validation waits for the next training batch, or for the end of training.
    The signals are noted by zoo.core.signals.stop_on_signals, which train() holds: the second
    Ctrl-C stops at once, and a SIGINT that was ignored when the run started (``nohup``, a
    background job) stays ignored.

    A step that an attack makes long (``task.adversarial`` with many PGD steps, or the PGD of
    ``val/robust_acc``) checks the same note at each of the attack's steps and stops at once
    (StopRequested): the step is half done, so no checkpoint is written, the last one stands,
    and the run exits with 143 or 130 all the same.

    With several ranks, Lightning's handler broadcasts from inside the signal handler: when it
    interrupts another collective, or runs twice on a rank signalled twice (by the scheduler
    and by rank 0), the ranks deadlock. There, the signal is only noted, and the ranks agree on
    it at the next batch end (a SIGTERM during validation then waits for the next batch). A
    Ctrl-C in a terminal reaches every rank; each notes it, and they agree the same way. An
    attack's loop then runs to its end: a rank that stopped alone would leave the others
    waiting.
    """

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self._saved = False
        self._sigterm = False
        self._sigint = False
        self._previous_sigint: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its handlers; it restores the previous ones at teardown.
        # On one device, zoo.core.signals' handlers note the signals (and Lightning's calls them).
        if threading.current_thread() is not threading.main_thread() or trainer.world_size == 1:
            return
        signal.signal(signal.SIGTERM, self._note_sigterm)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous_sigint = signal.signal(signal.SIGINT, self._note_sigint)

    def _note_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self._sigterm = True

    def _note_sigint(self, signum: int, frame: FrameType | None) -> None:
        self._sigint = True
        # A second Ctrl-C stops at once. (None: a handler set outside Python, the default one.)
        previous = signal.SIG_DFL if self._previous_sigint is None else self._previous_sigint
        signal.signal(signal.SIGINT, previous)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._stop_if_signalled(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A Ctrl-C during the last validation: stop before testing.
        self._stop_if_signalled(trainer)

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        # Decided by all ranks together, since saving is collective; SIGTERM wins over Ctrl-C.
        noted = stop_requested()
        sigterm = trainer.received_sigterm or self._sigterm or noted == signal.SIGTERM
        sigint = self._sigint or noted == signal.SIGINT
        if not trainer.strategy.reduce_boolean_decision(sigterm or sigint, all=False):
            return
        if trainer.strategy.reduce_boolean_decision(sigterm, all=False):
            self._save(trainer)
            raise SIGTERMException(PREEMPTED_EXIT_CODE)
        self._save(trainer, interrupted=True)
        raise InterruptedExit(INTERRUPTED_EXIT_CODE)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, StopRequested):
            self._report_stop_inside_step(trainer, exception)
            return
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
                f"SIGTERM during {stage_name(trainer)}: no new checkpoint; "
                "ckpt_path=last resumes from the last one saved"
            )

    def _report_stop_inside_step(self, trainer: pl.Trainer, stop: StopRequested) -> None:
        if not trainer.is_global_zero:
            return
        if self.path.is_file():
            resume = f"resume from {self.path} with: {resume_command(self.path)}"
        else:
            resume = "no checkpoint had been saved yet"
        log.warning(
            f"{stop.reason} inside a {stage_name(trainer)} step, in its attack's loop: stopped "
            f"at once, with no new checkpoint; {resume}"
        )

    def _save(self, trainer: pl.Trainer, interrupted: bool = False) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)
        self._saved = True
        if not trainer.is_global_zero:
            return
        if interrupted:
            log.warning(
                f"Interrupted: saved {self.path} at step {trainer.global_step}; "
                f"resume with: {resume_command(self.path)}"
            )
        else:
            log.warning(
                f"SIGTERM: saved {self.path} at step {trainer.global_step} (epoch "
                f"{trainer.current_epoch}); resume with ckpt_path=last in the same run directory"
            )


STAGE_NAMES = {
    RunningStage.TRAINING: "training",
    RunningStage.VALIDATING: "validation",
    RunningStage.SANITY_CHECKING: "sanity check",
    RunningStage.TESTING: "test",
}


def stage_name(trainer: pl.Trainer) -> str:
    """What the trainer was doing, in words: "training", "validation", "sanity check"."""
    stage = trainer.state.stage
    return STAGE_NAMES.get(stage, stage.value if stage is not None else "setup")


def resume_command(checkpoint: Path) -> str:
    """The train.py command that resumes from ``checkpoint``: this run's overrides, as Hydra
    recorded them, then ckpt_path=last in this run's directory (or the checkpoint's path, for
    a checkpoint outside it)."""
    program = training_command()
    if not HydraConfig.initialized():
        command = shlex.join(program)
        return f"{command} <the same overrides> ckpt_path={shlex.quote(str(checkpoint))}"
    hydra = HydraConfig.get()
    run_dir = Path(hydra.runtime.output_dir)
    overrides = [o for o in hydra.overrides.task if not _CKPT_PATH_OVERRIDE.match(o)]
    if checkpoint == run_dir / "checkpoints" / "last.ckpt":
        resume = ["ckpt_path=last", f"hydra.run.dir={run_dir}"]
    else:
        resume = [f"ckpt_path={checkpoint}"]
    return shlex.join([*program, *overrides, *resume])


def training_command() -> list[str]:
    """How this run was started: ``zoo-train`` (the installed command) or ``python train.py``."""
    name = Path(sys.argv[0]).name
    return [name] if name.startswith("zoo-") else ["python", "train.py"]
