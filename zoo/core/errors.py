"""The user-error base class, and turning user errors into one clear line and a non-zero exit,
as Hydra does for its own."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


class ZooError(Exception):
    """The user asked for something impossible, or handed over a file that won't do; not a bug
    in zoo. Every module's user errors derive from it, and the entry points catch this class."""


class ConfigError(ZooError, ValueError):
    """A config value that can't work; the message names the key and what is valid."""


# A missing file the user named is theirs to fix too.
USER_ERRORS: tuple[type[Exception], ...] = (ZooError, FileNotFoundError)


def in_multirun() -> bool:
    """True inside a Hydra multirun (``-m``) job."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Print a user error as one line on stderr and exit non-zero, without a stack trace.

    HYDRA_FULL_ERROR=1 shows the full trace instead, as it does for Hydra's own errors. In a
    multirun the error is raised on, as the failure of this job: exiting would abort the jobs
    still to run (zoo.training.sweep.SweepSummary reports it).
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or in_multirun():
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(exit_code)
