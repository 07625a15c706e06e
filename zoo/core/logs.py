"""What the zoo's commands print: the warnings and log lines of its libraries that say nothing
about the run and that users can't act on, filtered by the entry points (train.py, evaluate.py,
``python -m zoo.tools.bench``) with :func:`quiet_library_noise`. Importing the zoo changes no
filter: a program that uses it as a library keeps its own."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from lightning_fabric.utilities.rank_zero import rank_zero_only
from rich.console import Console
from rich.table import Table

log = logging.getLogger(__name__)


class LightningNoise(logging.Filter):
    """Drops what Lightning prints at every run that says nothing about it: the "💡 Tip:" lines
    advertising its cloud services, and that our configs' model summary replaces its default."""

    NOISE = ("💡 Tip:", "Trainer already configured with model summary callbacks")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


# Lightning logs its rank-zero messages through one of these, depending on the import order.
LIGHTNING_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "lightning_fabric.utilities.rank_zero",
)
_LIGHTNING_NOISE = LightningNoise()


def quiet_library_noise() -> None:
    """Install the filters (in this process; calling it again adds nothing)."""
    # Lightning 2.6 still calls a torch pytree API that torch 2.10+ deprecates, once per run.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=Warning
    )
    # The task modules log each epoch's mean training loss (train/loss_epoch) whatever the
    # interval.
    warnings.filterwarnings(
        "ignore", message=r"The number of training batches \(\d+\) is smaller than the logging"
    )
    # zoo/configs/hydra/launcher/submitit_*.yaml shadow the plugin's configs of the same names on
    # purpose, with our defaults, and Hydra still checks them against the plugin's schema
    # (catching typos).
    warnings.filterwarnings(
        "ignore", message=r"\s*'hydra/launcher/submitit_\w+' is validated against"
    )
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).addFilter(_LIGHTNING_NOISE)  # a no-op if already there


def write_to_log_files(message: str, name: str = "zoo") -> None:
    """``message`` into the run's log files only — the file handlers on the root logger
    (Hydra's job logging: ``<run dir>/<command>.log``) — not to the console, which the caller
    serves its own way (a table drawn for the terminal, or a line only where no progress bar
    shows). Nothing where no log file is configured."""
    record = logging.LogRecord(name, logging.INFO, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@rank_zero_only
def log_run_directory(output_dir: Path, holding: str = "") -> None:
    """Say where the run writes (at its start) or wrote ``holding`` (at its end), once: from
    rank 0 only, the other ranks of a DDP run writing into the same directory."""
    log.info("run directory: %s%s", output_dir, f" ({holding})" if holding else "")


def print_full_width(console: Console, table: Table) -> None:
    """``table`` at the width its cells need, wider than the terminal if it must: rich draws at
    80 columns where stdout is a pipe or a file, and cuts every cell to fit ("le…"). The
    console stays that wide for what it prints next."""
    needed = console.measure(table, options=console.options.update_width(10_000)).maximum
    # Console.print(width=) is capped at the console's own width: widen the console itself.
    console.width = max(console.width, needed)
    console.print(table)
