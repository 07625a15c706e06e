"""zoo.core.logs: importing the zoo changes no warning or logging filter; the entry points'
quiet_library_noise() drops the library noise, and only it, however often it is called."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from zoo.core.logs import LIGHTNING_LOGGERS, quiet_library_noise

# In a fresh interpreter: the libraries' own filters first, then the zoo's modules, which must add
# none, nor any logging filter.
IMPORTS = f"""
import logging, warnings
import hydra, pytorch_lightning, torchvision, torchmetrics, captum
libraries = list(warnings.filters)
import zoo.core.errors, zoo.models, zoo.training.run, zoo.evaluation.run, zoo.tools.bench
print(warnings.filters == libraries)
print(sum(len(logging.getLogger(name).filters) for name in {LIGHTNING_LOGGERS!r}))
"""


def test_importing_the_zoo_installs_no_filter() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "0"]


@pytest.mark.parametrize(
    "message",
    [
        "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`",
        "The number of training batches (3) is smaller than the logging interval",
        "\n'hydra/launcher/submitit_local' is validated against ConfigStore schema",
    ],
)
def test_the_known_warnings_are_filtered(message: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_library_noise()
        warnings.warn(message, UserWarning, stacklevel=1)
        warnings.warn("any other warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["any other warning"]


def test_lightnings_advertising_is_dropped_and_the_rest_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    quiet_library_noise()
    quiet_library_noise()  # a second call adds nothing
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        assert len(logger.filters) == 1
        with caplog.at_level(logging.INFO, logger=name):
            logger.info("💡 Tip: For seamless cloud logging ...")
            logger.info("GPU available: False, used: False")
    assert "Tip" not in caplog.text
    assert caplog.text.count("GPU available") == len(LIGHTNING_LOGGERS)
