"""benchmarks/threads.py: one Markdown row per job, thread setting and load, with the median wall
time of the repeats and their spread."""

from __future__ import annotations

from benchmarks.threads import JOBS, Row


def test_a_row_holds_the_median_and_the_spread_of_the_repeats() -> None:
    row = Row("lenet", "auto", "idle", [17.0, 16.0, 30.0], 1.014)
    assert row.line() == "| lenet | auto | idle | 17.0 (16.0-30.0) | 1.01 |"


def test_a_single_run_has_no_spread() -> None:
    assert Row("lenet", "1", "one busy core", [23.2], 1.0).line().endswith("| 23.2 | 1.00 |")


def test_every_job_is_a_train_py_command_line() -> None:
    for overrides in JOBS.values():
        assert all("=" in override for override in overrides)
