"""Turning user mistakes into one clear line and a non-zero exit, as Hydra does for its own."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from zoo.config import ConfigError
from zoo.data.imagenet import ImageNetDataError
from zoo.data.mnist_files import MNISTUnavailableError
from zoo.data.segmentation import SegmentationDataError
from zoo.fault_tolerance import NonFiniteError

log = logging.getLogger("zoo")

# Lightning 2.6 still calls a torch pytree API that torch 2.10+ deprecates, once per run: noise
# for our users, nothing they can act on.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=Warning
)

# Errors that mean "the user asked for something impossible", not "zoo has a bug".
# A diverging loss is the run's settings' doing (learning rate, no clipping), not a bug.
USER_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    MNISTUnavailableError,
    FileNotFoundError,
    NonFiniteError,
    SegmentationDataError,
    ImageNetDataError,
)


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


@contextmanager
def exit_on_user_error(exit_code: int = 2) -> Iterator[None]:
    """Print a user error as one line on stderr and exit non-zero, without a stack trace.

    HYDRA_FULL_ERROR=1 shows the full trace instead, as it does for Hydra's own errors. In a
    multirun the error is raised on, as the failure of this job: exiting would abort the jobs
    still to run (zoo.sweep.SweepSummary reports it).
    """
    try:
        yield
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or in_multirun():
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(exit_code)
