"""One user-error base class: every error zoo raises for a user's mistake derives from ZooError,
and the entry points turn that one class into one line and exit code 2."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import zoo
from zoo.core.errors import ZooError, exit_on_user_error
from zoo.core.signals import StopRequested
from zoo.training.preemption import InterruptedExit
from zoo.training.sweep import SweepFailed


def exception_classes() -> list[type[BaseException]]:
    """Every exception class defined in a zoo module."""
    found = []
    for info in pkgutil.walk_packages(zoo.__path__, "zoo."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == info.name:
                found.append(cls)
    return found


# Hydra prints SweepFailed itself, at the end of a multirun: it reports the jobs' user errors.
# InterruptedExit is the exit (130) of a run paused by Ctrl-C, after its checkpoint is saved;
# StopRequested the exit (143 or 130) of a loop that a SIGTERM or a Ctrl-C stopped.
NOT_USER_ERRORS = {SweepFailed, InterruptedExit, StopRequested}


@pytest.mark.parametrize("cls", exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_zoo_error_is_a_user_error(cls: type[BaseException]) -> None:
    assert cls in NOT_USER_ERRORS or issubclass(cls, ZooError)


def test_a_user_error_is_one_line_on_stderr_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited, exit_on_user_error():
        raise ZooError("data.batch_size must be an integer >= 1, got 0")
    assert exited.value.code == 2
    assert capsys.readouterr().err == "Error: data.batch_size must be an integer >= 1, got 0\n"


def test_a_bug_is_not_swallowed() -> None:
    with pytest.raises(KeyError), exit_on_user_error():
        raise KeyError("a bug in zoo, with its traceback")
