"""zoo.training.preemption: the command a paused run prints names the way it was started."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zoo.training.preemption import resume_command


@pytest.mark.parametrize(
    ("argv0", "starts"),
    [("/venv/bin/zoo-train", "zoo-train "), ("/work/zoo/train.py", "python train.py ")],
)
def test_the_resume_command_is_the_one_that_started_the_run(
    monkeypatch, argv0: str, starts: str
) -> None:
    monkeypatch.setattr(sys, "argv", [argv0])
    command = resume_command(Path("/runs/a/checkpoints/last.ckpt"))
    assert command.startswith(starts)
    assert command.endswith("ckpt_path=/runs/a/checkpoints/last.ckpt")
