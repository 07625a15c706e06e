"""Multiruns as SLURM jobs (or local subprocesses) through hydra-submitit-launcher
(zoo/configs/hydra/launcher/submitit_*.yaml), whose jobs resume where they stopped when requeued."""

from __future__ import annotations

import os

# Set by submitit in every job it runs: "slurm" or "local".
SUBMITIT_JOB = "SUBMITIT_EXECUTOR"


def cluster_ckpt_path(ckpt_path: str | None) -> str | None:
    """``ckpt_path``, or ``"auto"`` for a submitit job that names none.

    submitit pickles each job's call, and a requeued job (time limit or preemption: the SIGUSR2
    that submitit handles, or SLURM's own requeue) runs that same call again, in the same job
    directory. With ``auto`` it resumes from the directory's last.ckpt, through the exact resume
    (zoo.training.resume), or starts afresh when there is none yet. Hydra admits launchers only
    from its ``hydra_plugins`` package, so the plugin's launcher can't add the override itself.
    """
    if ckpt_path is None and os.environ.get(SUBMITIT_JOB):
        return "auto"
    return ckpt_path
