"""zoo.core.signals: SIGTERM and Ctrl-C stop every long loop within seconds, with exit code 143 or
130 and one line: the mechanism in this process, then evaluate.py inside a long L-BFGS attack and
train.py inside a long adversarial training step, each signalled for real in a subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from tests.conftest import REPO_ROOT, start_script, synthetic_train_overrides
from zoo.core.signals import (
    INTERRUPTED_EXIT_CODE,
    PREEMPTED_EXIT_CODE,
    StopRequested,
    check_stop,
    check_stop_before_forward,
    stop_on_signals,
    stop_requested,
)

# LeNet-5 trained on MNIST: a real checkpoint of 0.3 MB.
LENET = REPO_ROOT / "tests" / "evaluation" / "legacy" / "lenet_before_layout.ckpt"
# From the signal to the line that says the loop stopped: well under a second on an idle
# machine; the margin is for a loaded one, where a process may wait seconds for a core.
STOPS_WITHIN_S = 10.0
TIMEOUT_S = 120


def test_a_sigterm_is_noted_and_the_next_check_stops_with_143() -> None:
    with stop_on_signals():
        check_stop()  # nothing noted: goes on
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop_requested() == signal.SIGTERM
        with pytest.raises(StopRequested) as stopped:
            check_stop()
    assert stopped.value.code == PREEMPTED_EXIT_CODE == 143
    assert stop_requested() is None  # nothing carries over to the next run


@pytest.fixture
def ctrl_c_not_ignored():
    """Python's own Ctrl-C handler, as in a terminal: a job started in the background (``&``,
    ``nohup``) inherits an ignored SIGINT, which stop_on_signals rightly leaves ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_the_first_ctrl_c_is_noted_with_130_and_the_second_stops_at_once(
    ctrl_c_not_ignored,
) -> None:
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(StopRequested) as stopped:
            check_stop()
        assert stopped.value.code == INTERRUPTED_EXIT_CODE == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between two bytecodes of this thread


def test_sigterm_wins_over_ctrl_c(ctrl_c_not_ignored) -> None:
    with stop_on_signals():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(StopRequested) as stopped:
            check_stop()
    assert stopped.value.code == 143


def test_the_previous_handlers_come_back_and_an_ignored_ctrl_c_stays_ignored() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) not in before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_lightnings_stop_between_batches_exits_143_not_0() -> None:
    with pytest.raises(StopRequested) as stopped, stop_on_signals():
        raise SIGTERMException  # Lightning raises it with no code: exit 0
    assert stopped.value.code == 143


def test_every_forward_pass_of_a_watched_network_checks_first() -> None:
    network = nn.Linear(2, 1)
    handle = check_stop_before_forward(network)
    with stop_on_signals():
        network(torch.zeros(1, 2))
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(StopRequested):
            network(torch.zeros(1, 2))
    handle.remove()
    network(torch.zeros(1, 2))


# --- for real, in a subprocess --------------------------------------------------------------


def start(script: str, log: Path, *args: str) -> subprocess.Popen[str]:
    return start_script(script, log, *args, env={"OMP_NUM_THREADS": "1"})


def signal_when(
    process: subprocess.Popen[str], log: Path, ready: Callable[[str], bool], signum: int
) -> datetime:
    """Send ``signum`` once ``ready(output so far)``, and wait for the process to end; when
    the signal was sent."""
    deadline = time.monotonic() + TIMEOUT_S
    while not ready(log.read_text()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"not ready (exit {process.poll()}):\n{log.read_text()}")
        time.sleep(0.05)
    sent = datetime.now()
    process.send_signal(signum)
    try:
        process.wait(TIMEOUT_S)
    finally:
        process.kill()
    return sent


def seconds_to(line: str, output: str, sent: datetime) -> float:
    """The seconds from ``sent`` to the log record holding ``line`` (its timestamp)."""
    [record] = [record for record in output.splitlines() if line in record]
    stamp = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]", record)
    assert stamp, record
    return (datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f") - sent).total_seconds()


def well_into(run_dir: Path, seconds: float = 2.0) -> Callable[[str], bool]:
    """Ready ``seconds`` after the run said where it writes: loading the data and the
    checkpoint take a fraction of that, and the long loop the rest."""
    said: list[float] = []

    def ready(output: str) -> bool:
        if f"run directory: {run_dir}" not in output:
            return False
        said.append(said[0] if said else time.monotonic())
        return time.monotonic() - said[0] > seconds

    return ready


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [
        (signal.SIGTERM, 143, "SIGTERM: evaluate.py stopped before its end; nothing was written"),
        # The same path, with its own code and words (in this process: the tests above).
        pytest.param(
            signal.SIGINT,
            130,
            "Interrupted (Ctrl-C): evaluate.py stopped before its end; nothing was written",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["sigterm", "ctrl-c"],
)
def test_evaluate_stops_inside_an_lbfgs_attack_within_seconds(
    signum: int, code: int, line: str, synthetic_mnist: Path, tmp_path: Path
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "evaluate.log"
    process = start(
        "evaluate.py",
        log,
        f"ckpt_path={LENET}",
        f"paths.data_dir={synthetic_mnist}",
        "+data.verify=false",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "logger=none",
        "attack=lbfgs",
        # Hours of L-BFGS: only the signal ends it.
        "attack.max_iterations=10000",
        "attack.search_steps=50",
        f"hydra.run.dir={run_dir}",
    )
    sent = signal_when(process, log, well_into(run_dir), signum)

    output = log.read_text()
    assert process.returncode == code, output
    assert seconds_to(line, output, sent) < STOPS_WITHIN_S, output
    assert "Traceback" not in output, output
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow  # a second startup of torch and Lightning: the default suite has one
def test_train_stops_inside_a_long_adversarial_step_within_seconds(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "train.log"
    process = start(
        "train.py",
        log,
        *synthetic_train_overrides(synthetic_mnist),
        "logger=none",
        "trainer.num_sanity_val_steps=0",
        "data.batch_size=16",
        "task.adversarial.method=pgd",
        # One training step of 10,000 PGD steps: only the signal ends it.
        "task.adversarial.steps=10000",
        f"hydra.run.dir={run_dir}",
    )
    sent = signal_when(process, log, well_into(run_dir), signal.SIGTERM)

    output = log.read_text()
    assert process.returncode == 143, output
    line = (
        "SIGTERM inside a training step, in its attack's loop: stopped at once, with no new "
        "checkpoint; no checkpoint had been saved yet"
    )
    assert seconds_to(line, output, sent) < STOPS_WITHIN_S, output
    assert "Traceback" not in output, output
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()
