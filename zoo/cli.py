"""Turning user mistakes into one clear line and a non-zero exit, as Hydra does for its own."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from zoo.config import ConfigError
from zoo.data.mnist_files import MNISTUnavailableError

log = logging.getLogger("zoo")

# Errors that mean "the user asked for something impossible", not "zoo has a bug".
USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, MNISTUnavailableError, FileNotFoundError)


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Print a user error as one line on stderr and exit non-zero, without a stack trace.

    HYDRA_FULL_ERROR=1 shows the full trace instead, as it does for Hydra's own errors.
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(exit_code)
