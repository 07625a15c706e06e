"""Fault tolerance: a killed or preempted run resumes exactly, a kill mid-save loses nothing, a
diverging loss stops the run, and a failing sweep job stops nothing but itself.

Signals are real, sent to train.py in a subprocess; the runs they are compared with run in this
process, on the same synthetic MNIST, with the same single thread.
"""

from __future__ import annotations

import csv
import math
import os
import random
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from tests.conftest import (
    compose_config,
    run_script,
    start_script,
    synthetic_train_overrides,
)
from zoo.core.errors import exit_on_user_error
from zoo.core.trainer import build_trainer
from zoo.data.mnist.mnist import MNISTDataModule
from zoo.data.sampling import ResumableBatchSampler
from zoo.training.checkpoint_io import TEMP_GLOB, AtomicCheckpointIO
from zoo.training.finite_guard import NonFiniteError
from zoo.training.preemption import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE
from zoo.training.resume import rng_states, set_rng_states
from zoo.training.run import train

BATCHES_PER_EPOCH = -(-(640 - 100) // 16)  # 540 synthetic training images in batches of 16
# Two epochs of LeNet-5 whose weights also take random noise from all three RNGs before each
# step, with last.ckpt every 5 steps.
RUN = (
    "data.batch_size=16",
    "trainer.max_epochs=2",
    "callbacks.step_checkpoint.every_n_train_steps=5",
    "logger=none",
    "test=false",
    "+callbacks.noise._target_=tests.training.fault_tolerance_helpers.RandomWeightNoise",
)
TIMEOUT = 120


def base_overrides(data_dir: Path) -> list[str]:
    """conftest's train_cfg overrides, for a subprocess."""
    return synthetic_train_overrides(data_dir)


def start_training(
    run_dir: Path, *overrides: str, env: dict[str, str] | None = None, pin_run_dir: bool = True
) -> subprocess.Popen[str]:
    """train.py in the background, writing into run_dir (unless the config picks it: pin_run_dir
    false), its output in run_dir/../<name>.log."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    # One thread, as in this process (one_thread): the same sums in the same order.
    pinned = [f"hydra.run.dir={run_dir}"] if pin_run_dir else []
    log = run_dir.parent / f"{run_dir.name}.log"
    return start_script(
        "train.py", log, *overrides, *pinned, env={"OMP_NUM_THREADS": "1", **(env or {})}
    )


def output_of(run_dir: Path) -> str:
    return (run_dir.parent / f"{run_dir.name}.log").read_text()


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], run_dir: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"train.py ended first (exit {process.returncode}):\n{output_of(run_dir)}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"timed out:\n{output_of(run_dir)}")
        time.sleep(0.01)


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_same_run(resumed: Path, straight: Path, steps: int = 2 * BATCHES_PER_EPOCH) -> None:
    """Same epoch and step (``steps``), bitwise the same weights and optimizer state."""
    a, b = load(resumed / "checkpoints" / "last.ckpt"), load(straight / "checkpoints" / "last.ckpt")
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    assert a["global_step"] == steps
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    moments = (c["optimizer_states"][0]["state"].values() for c in (a, b))
    for state_a, state_b in zip(*moments, strict=True):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """LeNet-5 at batch 16 gains nothing from a second thread, and loses much when the cores are
    busy; the train.py subprocesses get one thread too."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run the resumed ones must match: RUN, straight through, in this process."""
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    overrides = [*base_overrides(synthetic_mnist), *RUN]
    train(compose_config(overrides, run_dir), run_dir)
    return run_dir


def resume(train_cfg: Callable[..., DictConfig], run_dir: Path) -> None:
    train(train_cfg(*RUN, "ckpt_path=last", output_dir=run_dir), run_dir)


def test_sigkill_mid_epoch_then_resume_from_last_matches_an_uninterrupted_run_bitwise(
    synthetic_mnist: Path, uninterrupted: Path, train_cfg, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_training(run_dir, *base_overrides(synthetic_mnist), *RUN)
    wait_for(last.exists, process, run_dir)
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)

    killed_at = load(last)["global_step"]
    assert killed_at % BATCHES_PER_EPOCH > 0, "the kill should land mid-epoch"
    resume(train_cfg, run_dir)
    assert_same_run(run_dir, uninterrupted)


# callbacks=ema, its average moving fast enough to differ from the weights at every step.
EMA = ("callbacks=ema", "callbacks.ema.decay=0.9")


@pytest.fixture(scope="module")
def uninterrupted_with_ema(synthetic_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted_ema")
    train(compose_config([*base_overrides(synthetic_mnist), *RUN, *EMA], run_dir), run_dir)
    return run_dir


def test_with_ema_a_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run_bitwise(
    synthetic_mnist: Path, uninterrupted_with_ema: Path, train_cfg, tmp_path: Path
) -> None:
    """The average (state_dict), the raw weights the run goes on from (current_model_state)
    and the average's update count all come back exactly."""
    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_training(run_dir, *base_overrides(synthetic_mnist), *RUN, *EMA)
    wait_for(last.exists, process, run_dir)
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)

    assert load(last)["global_step"] % BATCHES_PER_EPOCH > 0, "the kill should land mid-epoch"
    train(train_cfg(*RUN, *EMA, "ckpt_path=last", output_dir=run_dir), run_dir)
    assert_same_run(run_dir, uninterrupted_with_ema)
    a, b = (load(d / "checkpoints" / "last.ckpt") for d in (run_dir, uninterrupted_with_ema))
    assert a["current_model_state"].keys() == b["current_model_state"].keys()
    for key, raw in a["current_model_state"].items():
        assert torch.equal(raw, b["current_model_state"][key]), key
    assert not torch.equal(a["state_dict"][key], raw), "the average should differ"
    assert a["averaging_state"]["n_averaged"] == b["averaging_state"]["n_averaged"]


def test_sigterm_saves_at_the_next_batch_boundary_exits_143_and_resumes_exactly(
    synthetic_mnist: Path, uninterrupted: Path, train_cfg, tmp_path: Path
) -> None:
    run_dir = tmp_path / "preempted"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_training(run_dir, *base_overrides(synthetic_mnist), *RUN)
    wait_for(last.exists, process, run_dir)
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED_EXIT_CODE == 143, output_of(run_dir)

    output = output_of(run_dir)
    assert "Traceback" not in output, output
    assert f"SIGTERM: saved {last} at step {load(last)['global_step']} " in output, output
    resume(train_cfg, run_dir)
    assert_same_run(run_dir, uninterrupted)


def start_held_at_step_2(
    synthetic_mnist: Path, run_dir: Path, marker: Path
) -> subprocess.Popen[str]:
    """RUN in train.py, holding training step 2 (the first epoch's third, before any
    checkpoint) from the moment ``marker`` appears until the test removes it."""
    hold = "tests.training.fault_tolerance_helpers.HoldStepWhileMarked"
    return start_training(
        run_dir, *base_overrides(synthetic_mnist), *RUN,
        f"+callbacks.hold._target_={hold}", "+callbacks.hold.step=2",
        f"+callbacks.hold.marker={marker}",
    )  # fmt: skip


def test_ctrl_c_finishes_the_step_saves_last_prints_the_resume_command_and_exits_130(
    synthetic_mnist: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    run_dir, marker = tmp_path / "interrupted", tmp_path / "at_step_2"
    last = run_dir / "checkpoints" / "last.ckpt"
    process = start_held_at_step_2(synthetic_mnist, run_dir, marker)
    wait_for(marker.exists, process, run_dir)
    assert not last.exists()
    process.send_signal(signal.SIGINT)
    marker.unlink()
    assert process.wait(TIMEOUT) == INTERRUPTED_EXIT_CODE == 130, output_of(run_dir)

    output = output_of(run_dir)
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output
    [line] = [line for line in output.splitlines() if "resume with" in line]
    saved = re.escape(f"Interrupted: saved {last} at step 3; resume with: ")
    match = re.search(f"{saved}(python train.py .*)$", line)
    assert match, line
    assert load(last)["global_step"] == 3  # the step under way, then the save
    command = shlex.split(match[1])
    assert command[-2:] == ["ckpt_path=last", f"hydra.run.dir={run_dir}"]
    assert set(RUN) <= set(command)  # the run's own overrides

    # The printed command, as a user would paste it (the same single thread as the others).
    resumed = run_script(*command[1:], env={"OMP_NUM_THREADS": "1"}, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(run_dir, uninterrupted)


def test_a_second_ctrl_c_stops_at_once_without_saving(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    run_dir, marker = tmp_path / "interrupted", tmp_path / "at_step_2"
    process = start_held_at_step_2(synthetic_mnist, run_dir, marker)
    wait_for(marker.exists, process, run_dir)
    process.send_signal(signal.SIGINT)
    time.sleep(1)  # the first one handled: two pending SIGINTs would arrive as one
    process.send_signal(signal.SIGINT)  # while step 2 is still held: it never finishes

    assert process.wait(TIMEOUT) not in (0, INTERRUPTED_EXIT_CODE), output_of(run_dir)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
    assert "Interrupted: saved" not in output_of(run_dir)


def test_a_sigterm_during_validation_saves_once_it_is_over_and_resumes_exactly(
    uninterrupted: Path, train_cfg, tmp_path: Path
) -> None:
    signal_at_validation = "tests.training.fault_tolerance_helpers.SigtermDuringValidation"
    cfg = train_cfg(*RUN, f"+callbacks.sigterm._target_={signal_at_validation}")
    with pytest.raises(SystemExit) as stop:
        train(cfg, tmp_path)
    assert stop.value.code == PREEMPTED_EXIT_CODE
    assert load(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == BATCHES_PER_EPOCH
    resume(train_cfg, tmp_path)
    assert_same_run(tmp_path, uninterrupted)


def test_a_kill_while_last_ckpt_is_rewritten_leaves_it_whole_and_nothing_behind(
    synthetic_mnist: Path, train_cfg, tmp_path: Path
) -> None:
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    checkpoints = run_dir / "checkpoints"
    process = start_training(
        run_dir,
        *base_overrides(synthetic_mnist),
        *RUN,
        "trainer.plugins=[{_target_:tests.training.fault_tolerance_helpers.PausingCheckpointIO,pause:60}]",
        env={"TMPDIR": str(tmpdir)},
    )

    # The second save of last.ckpt pauses halfway through: kill it there. (The first one's
    # temporary file becomes last.ckpt in one rename: the two never coexist.)
    def rewriting() -> bool:
        return (checkpoints / "last.ckpt").exists() and any(checkpoints.glob(TEMP_GLOB))

    wait_for(rewriting, process, run_dir)
    previous = load(checkpoints / "last.ckpt")
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)

    assert load(checkpoints / "last.ckpt")["global_step"] == previous["global_step"] == 5
    [stale] = checkpoints.glob(TEMP_GLOB)
    assert stale.stat().st_size > 0  # the half-written checkpoint
    assert list(tmpdir.iterdir()) == []
    resume(train_cfg, run_dir)  # starts by removing what the killed save left
    assert not stale.exists()
    assert not list(checkpoints.glob(TEMP_GLOB))


def test_atomic_checkpoint_io_keeps_the_previous_file_when_a_write_fails(tmp_path: Path) -> None:
    io, target = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, target)
    assert load(target) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_nan_loss_stops_the_run_at_its_step_with_one_line_and_a_nonzero_exit(
    train_cfg, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # SGD at this rate overflows within a few steps.
    cfg = train_cfg("optimizer=sgd", "optimizer.lr=1e30", "scheduler=none", "logger=csv")
    with pytest.raises(SystemExit) as stop, exit_on_user_error():
        train(cfg, tmp_path)
    assert stop.value.code != 0
    [line] = capsys.readouterr().err.splitlines()
    match = re.fullmatch(r"Error: the training loss is not finite \(\w+\) at step (\d+) .*", line)
    assert match, line
    # It stopped at the first step whose loss was not finite: the ones logged before were.
    with (tmp_path / "csv" / "metrics.csv").open() as file:
        rows = [row for row in csv.DictReader(file) if row["train/loss"]]
    losses = {int(row["step"]): float(row["train/loss"]) for row in rows}
    assert sorted(losses) == list(range(int(match[1])))
    assert all(math.isfinite(loss) for loss in losses.values())


NAN_AT_STEP_1 = (
    "+callbacks.nan._target_=tests.training.fault_tolerance_helpers.NaNWeightsAtStep",
    "+callbacks.nan.step=1",
)


def test_the_finite_guard_reads_losses_at_logging_steps_and_still_names_the_first_bad_one(
    train_cfg, tmp_path: Path
) -> None:
    # The losses wait on the device until step 3, the first one the loggers write at: the run
    # stops there, naming step 1, before any checkpoint.
    cfg = train_cfg("trainer.log_every_n_steps=4", *NAN_AT_STEP_1)
    with pytest.raises(NonFiniteError, match=r"not finite \(nan\) at step 1 \(epoch 0, batch 1\)"):
        train(cfg, tmp_path)
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_the_finite_guard_checks_the_waiting_losses_before_every_save(
    train_cfg, tmp_path: Path
) -> None:
    # last.ckpt after every step: the one after step 0 is written, the one after step 1 is not.
    cfg = train_cfg(
        "trainer.log_every_n_steps=4", "callbacks.step_checkpoint.every_n_train_steps=1",
        *NAN_AT_STEP_1,
    )  # fmt: skip
    with pytest.raises(NonFiniteError, match=r"at step 1 "):
        train(cfg, tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 1
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def test_non_finite_weights_are_never_saved_as_best(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg(
        "trainer.max_epochs=1",
        "+callbacks.poison._target_=tests.training.fault_tolerance_helpers.PoisonWeightsBeforeValidation",
    )
    steps = -(-(640 - 100) // 128)  # one epoch of the synthetic digits at the default batch
    with pytest.raises(NonFiniteError, match=f"NaN or infinite at step {steps}: refusing to save"):
        train(cfg, tmp_path)
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_a_failing_sweep_job_stops_only_itself_and_the_summary_names_it(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    result = run_script(
        "train.py",
        "-m",
        "data.batch_size=0,16",
        "debug=fast_dev_run",
        *base_overrides(synthetic_mnist),
        f"paths.log_dir={tmp_path}",
        timeout=TIMEOUT,
    )
    assert result.returncode != 0
    assert "1 of 2 jobs failed:" in result.stderr, result.stderr[-3000:]
    assert "#0 data.batch_size=0: ConfigError: data.batch_size must be an integer >= 1" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    [sweep] = (tmp_path / "train" / "multiruns").iterdir()
    assert not (sweep / "0" / "metrics.json").exists()
    assert (sweep / "1" / "metrics.json").is_file()  # the job after the failure ran


def test_cluster_slurm_requeues_through_lightning_and_keeps_one_run_dir_per_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slurm = {"JOB_ID": "4242", "NTASKS": "1", "JOB_NAME": "zoo", "PROCID": "0", "LOCALID": "0"}
    for key, value in slurm.items():
        monkeypatch.setenv(f"SLURM_{key}", value)
    cfg = compose_config(["cluster=slurm", "trainer.accelerator=cpu"], tmp_path)
    assert cfg.hydra.run.dir.endswith("/train/runs/slurm-4242")
    trainer = build_trainer(cfg.trainer, logger=False)
    environment = trainer._accelerator_connector.cluster_environment
    assert isinstance(environment, SLURMEnvironment) and environment.auto_requeue
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_the_default_trainer_writes_checkpoints_atomically(tmp_path: Path) -> None:
    cfg = compose_config(["trainer.accelerator=cpu"], tmp_path)
    trainer = build_trainer(cfg.trainer, logger=False)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    torch.save({"rng": rng_states()}, tmp_path / "state.ckpt")
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])

    set_rng_states(load(tmp_path / "state.ckpt")["rng"])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]


@pytest.mark.parametrize("replicas", [1, 2])
def test_a_resumed_sampler_yields_exactly_the_batches_not_yet_seen(replicas: int) -> None:
    def batches(rank: int, **resume: int) -> list[list[int]]:
        sampler = ResumableBatchSampler(range(50), 4, seed=0, num_replicas=replicas, rank=rank)
        if resume:
            sampler.resume_at(epoch=3, **resume)
        sampler.set_epoch(3)
        assert len(list(sampler)) + resume.get("batches_seen", 0) == len(sampler)
        return list(sampler)

    for rank in range(replicas):
        assert batches(rank, batches_seen=2, seed=0) == batches(rank)[2:]
    # The ranks share the indices out between them; the seed comes with the position.
    assert {i for rank in range(replicas) for batch in batches(rank) for i in batch} == set(
        range(50)
    )
    assert batches(0, batches_seen=1, seed=7) != batches(0)[1:]


def test_a_resumed_sampler_starts_afresh_in_the_next_epoch() -> None:
    sampler = ResumableBatchSampler(range(20), 4, seed=0)
    sampler.resume_at(epoch=0, batches_seen=3, seed=0)
    assert len(list(sampler)) == 2
    sampler.set_epoch(1)
    assert len(list(sampler)) == 5


def kill_every_rank(run_dir: Path) -> None:
    """SIGKILL to train.py and the ranks Lightning started (their command lines name run_dir)."""
    ranks = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    for pid in map(int, ranks.stdout.split()):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_under_ddp_a_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_ddp_run_bitwise(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    """Two CPU ranks, each on its share of the shuffle: the training order resumes exactly."""
    ddp = ("trainer=ddp", "trainer.devices=2", "trainer.strategy.timeout.seconds=60")
    common = (*base_overrides(synthetic_mnist), *RUN, *ddp)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    process = start_training(straight, *common)
    assert process.wait(3 * TIMEOUT) == 0, output_of(straight)

    last = killed / "checkpoints" / "last.ckpt"
    process = start_training(killed, *common)
    wait_for(last.exists, process, killed)
    kill_every_rank(killed)
    process.wait(TIMEOUT)
    steps_per_epoch = -(-(640 - 100) // 2 // 16)  # each rank's 270 images in batches of 16
    assert load(last)["global_step"] % steps_per_epoch > 0, "the kill should land mid-epoch"

    process = start_training(killed, *common, "ckpt_path=last")
    assert process.wait(3 * TIMEOUT) == 0, output_of(killed)
    assert_same_run(killed, straight, steps=2 * steps_per_epoch)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "exit_code", "said"),
    [
        # As SLURM does it: every rank gets the SIGTERM (Lightning's handler deadlocks here).
        (signal.SIGTERM, PREEMPTED_EXIT_CODE, "SIGTERM: saved {last} at step {step} "),
        # As a terminal does it: every rank gets the SIGINT; they agree at a batch end.
        (signal.SIGINT, INTERRUPTED_EXIT_CODE, "Interrupted: saved {last} at step {step}; "),
    ],
    ids=["sigterm", "ctrl_c"],
)
def test_a_signal_to_every_ddp_rank_saves_once_and_all_ranks_exit_with_its_code(
    signum: int, exit_code: int, said: str, synthetic_mnist: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "ddp"
    last = run_dir / "checkpoints" / "last.ckpt"
    ddp = ("trainer=ddp", "trainer.devices=2", "trainer.strategy.timeout.seconds=60")
    process = start_training(run_dir, *base_overrides(synthetic_mnist), *RUN, *ddp)
    wait_for(last.exists, process, run_dir)
    ranks = subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True, text=True)
    for pid in map(int, ranks.stdout.split()):
        os.kill(pid, signum)
    assert process.wait(TIMEOUT) == exit_code, output_of(run_dir)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", str(run_dir)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "a rank is left behind"
        time.sleep(0.1)
    saved = said.format(last=last, step=load(last)["global_step"])
    assert output_of(run_dir).count(saved) == 1, output_of(run_dir)


@pytest.mark.slow
def test_under_slurm_sigusr1_saves_and_requeues_then_sigterm_exits_143(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    """cluster=slurm in a fake SLURM job, whose scontrol only records how it was called."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol.calls"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {"JOB_ID": "4242", "NTASKS": "1", "JOB_NAME": "zoo", "PROCID": "0", "LOCALID": "0"}
    env = {f"SLURM_{key}": value for key, value in slurm.items()}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    run_dir = tmp_path / "train" / "runs" / "slurm-4242"  # cluster=slurm's run directory
    overrides = (*base_overrides(synthetic_mnist), *RUN, f"paths.log_dir={tmp_path}")
    process = start_training(run_dir, *overrides, "cluster=slurm", env=env, pin_run_dir=False)
    wait_for((run_dir / "checkpoints" / "last.ckpt").exists, process, run_dir)
    process.send_signal(signal.SIGUSR1)
    wait_for(calls.exists, process, run_dir)
    assert calls.read_text().split() == ["requeue", "4242"]
    assert load(run_dir / "hpc_ckpt_1.ckpt")["global_step"] > 0
    process.send_signal(signal.SIGTERM)
    assert process.wait(TIMEOUT) == PREEMPTED_EXIT_CODE, output_of(run_dir)


@pytest.mark.slow
def test_exact_resume_on_real_mnist_after_sigkill(tmp_path: Path) -> None:
    """The default recipe on the real MNIST for an epoch, killed after step 100 and resumed,
    ends with the weights of the same epoch straight through."""
    common = ("trainer.max_epochs=1", "test=false", "logger=none", "callbacks.progress_bar=null",
              "callbacks.step_checkpoint.every_n_train_steps=100")  # fmt: skip
    one_thread = {"OMP_NUM_THREADS": "1"}  # as start_training's
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run_script(
        "train.py", *common, f"hydra.run.dir={straight}", env=one_thread, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    process = start_training(killed, *common)
    wait_for((killed / "checkpoints" / "last.ckpt").exists, process, killed)
    process.send_signal(signal.SIGKILL)
    process.wait(TIMEOUT)
    assert load(killed / "checkpoints" / "last.ckpt")["global_step"] == 100
    resumed = run_script(
        "train.py",
        *common,
        "ckpt_path=last",
        f"hydra.run.dir={killed}",
        env=one_thread,
        timeout=900,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = load(killed / "checkpoints" / "last.ckpt"), load(straight / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 430  # 55,000 images in batches of 128
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key


def test_the_shuffle_follows_the_run_seed(synthetic_mnist: Path) -> None:
    pl.seed_everything(123)
    datamodule = MNISTDataModule(str(synthetic_mnist), verify=False, val_size=100)
    datamodule.setup("fit")
    assert datamodule.train_sampler is not None and datamodule.train_sampler.seed == 123
