"""zoo.tools.bench: the medians of several rounds with their range (min to max), and tables
that a log file holds whole (stdout not a terminal) rather than cut to 80 columns."""

from __future__ import annotations

import io

import pytest
import torch
from rich.console import Console

from zoo.tools import bench

# Three rounds of plain_loop's (train s, inference s, peak MB, FLOPs): the second one slow.
ROUNDS = [(0.010, 0.002, 100.0, 1e6), (0.030, 0.004, 120.0, 1e6), (0.012, 0.003, 110.0, 1e6)]
# The Lightning step of the same rounds: +10%, +50% and +10% over each round's plain step.
LIGHTNING_ROUNDS = [0.011, 0.045, 0.0132]


def result() -> bench.BenchResult:
    args = bench.parse_args(["--models", "lenet", "--device", "cpu", "--batch-size", "8"])
    return bench.bench_result("lenet", torch.device("cpu"), 32, args, ROUNDS, LIGHTNING_ROUNDS)


def test_it_runs_several_rounds_by_default() -> None:
    assert bench.parse_args(["--device", "cpu"]).rounds == 3


def test_a_row_is_the_medians_of_the_rounds_with_their_min_and_max() -> None:
    row = result()
    assert row.rounds == 3
    assert row.step_ms == pytest.approx(12.0) and row.step_ms_range == pytest.approx((10, 30))
    assert row.inference_images_per_s == pytest.approx(8 / 0.003)
    # Each round's Lightning step over its own plain step: one slow round moves the range, not
    # the median.
    assert row.lightning_overhead == pytest.approx(0.10)
    assert row.lightning_overhead_range == pytest.approx((0.10, 0.50))
    cells = dict(zip(bench.COLUMNS, bench.format_row(row), strict=True))
    assert cells["step ms"] == "12.0 (10.0 to 30.0)"
    assert cells["Lightning overhead"] == "+10.0% (+10.0% to +50.0%)"


def test_a_single_round_shows_no_range() -> None:
    args = bench.parse_args(["--models", "lenet", "--device", "cpu", "--rounds", "1"])
    row = bench.bench_result("lenet", torch.device("cpu"), 32, args, ROUNDS[:1])
    cells = dict(zip(bench.COLUMNS, bench.format_row(row), strict=True))
    assert cells["step ms"] == "10.0" and cells["Lightning overhead"] == "-"
    assert "one round" in bench.markdown_table([row])


def test_the_table_is_drawn_whole_where_stdout_is_not_a_terminal() -> None:
    written = io.StringIO()
    console = Console(file=written)  # not a terminal: rich's default width is 80 columns
    assert not console.is_terminal and console.width == 80
    row = result()
    bench.print_table([row], console)
    text = written.getvalue()
    assert "…" not in text
    for cell in bench.format_row(row):
        assert cell in text
    assert "medians of 3 rounds (min to max)" in text


def test_the_command_prints_a_whole_table_into_a_pipe(capsys: pytest.CaptureFixture) -> None:
    argv = ["--models", "lenet", "--device", "cpu", "--image-size", "32", "--batch-size", "4"]
    argv += ["--warmup", "0", "--steps", "1", "--rounds", "2", "--no-lightning"]
    assert bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "…" not in out and "medians of 2 rounds" in out
    assert "| lenet | " in out  # the markdown rows too
