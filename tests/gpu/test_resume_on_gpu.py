"""Exact resume on the GPU: train.py killed mid-epoch and resumed from last.ckpt ends with the
weights of the same run straight through, bitwise, the CUDA RNG state included.

The CPU's test (tests/training/test_fault_tolerance.py) on the GPU: the same recipe, whose
callback adds noise from every RNG before each step, here drawn on the GPU (torch.randn_like of
CUDA weights), as are the per-image distortions of the resident MNIST. fp32 with deterministic
algorithms: bf16 autocast and cuDNN's benchmark would each pick kernels run by run.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.conftest import run_script, synthetic_train_overrides
from tests.gpu.helpers import CUDA, GPU, on_gpu
from tests.training.test_fault_tolerance import (
    BATCHES_PER_EPOCH,
    RUN,
    TIMEOUT,
    assert_same_run,
    load,
    start_training,
    wait_for,
)

pytestmark = GPU

DETERMINISTIC = (
    "trainer.precision=32-true",
    # "warn": a kernel with no deterministic version names itself in the log, and the bitwise
    # comparison below is what decides.
    "trainer.deterministic=warn",
    "trainer.benchmark=false",
)
# cuBLAS is deterministic only with a fixed workspace; one thread, as start_training's runs.
ENV = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "OMP_NUM_THREADS": "1"}
SLOW = ("+callbacks.slow._target_=tests.gpu.callbacks.SlowSteps",)


def test_sigkill_mid_epoch_on_the_gpu_then_resume_matches_a_straight_run_bitwise(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    overrides = [*on_gpu(synthetic_train_overrides(synthetic_mnist)), *RUN, *DETERMINISTIC]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_script("train.py", *overrides, f"hydra.run.dir={straight}", env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]

    last = killed / "checkpoints" / "last.ckpt"
    process = start_training(killed, *overrides, *SLOW, env=ENV)
    wait_for(last.exists, process, killed)
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)
    state = load(last)
    assert state["global_step"] % BATCHES_PER_EPOCH > 0, "the kill should land mid-epoch"
    [resume_state] = [v for k, v in state["callbacks"].items() if "ResumeState" in k]
    assert len(resume_state["rng"]["cuda"]) == (1 if CUDA else 0)  # the GPU's RNG was saved

    resumed = run_script(
        "train.py", *overrides, *SLOW, "ckpt_path=last", f"hydra.run.dir={killed}", env=ENV
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(killed, straight)
