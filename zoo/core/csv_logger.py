"""``logger=csv``: Lightning's CSVLogger, except that a run resumed into its own directory
(``ckpt_path=last``) appends to its ``metrics.csv`` instead of deleting it.

Lightning's writer (``lightning_fabric.loggers.csv_logs._ExperimentWriter``) deletes
``metrics.csv`` as it opens a log folder that is not empty, with only a warning, because it
cannot know the file's columns; it starts with none and rewrites the file under a new header
whenever a new column appears. Here the columns are read from the file's header instead, so
the resumed run's rows follow the first run's (at their global steps), and a new column still
rewrites the file with every row kept.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, keeping the rows of an existing ``metrics.csv``."""

    def _check_log_dir_exists(self) -> None:
        # Lightning's __init__ calls this to delete the file; it is where its columns are learnt.
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` survives a resume into the same folder."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        # Lightning's, with the writer above.
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
