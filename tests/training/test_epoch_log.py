"""zoo.training.epoch_log and the run directory lines: a run that nobody watches live still says
where it writes and how each epoch went, in its log file and, off a terminal, on stdout; and
evaluate.py's log file holds its results table."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from tests.conftest import run_for_metrics, synthetic_train_overrides
from zoo.training.epoch_log import epoch_line

EPOCH_LINE = re.compile(
    r"^epoch (\d)/2  step \d+  val/acc \d\.\d{4}  val/acc_top5 \d\.\d{4}  val/loss "
)


def test_an_epoch_line_holds_the_epoch_the_step_and_each_validation_metric() -> None:
    metrics = {"val/loss": torch.tensor(0.03012), "val/acc": 0.99125, "train/loss": 0.5}
    assert (
        epoch_line(3, 15, 1290, metrics) == "epoch 3/15  step 1290  val/acc 0.9912  val/loss 0.0301"
    )
    assert epoch_line(0, -1, 7, {}) == "epoch 0  step 7"


def test_a_run_off_a_terminal_writes_a_line_per_epoch_and_its_run_directory(
    synthetic_mnist: Path, tmp_path: Path
) -> None:
    overrides = [o for o in synthetic_train_overrides(synthetic_mnist) if "progress_bar" not in o]
    result, _ = run_for_metrics(
        "train.py", tmp_path, *overrides, "trainer.max_epochs=2", "scheduler=none"
    )
    [run_dir] = (tmp_path / "train" / "runs").iterdir()
    printed = [line for line in result.stdout.splitlines() if EPOCH_LINE.match(line)]
    assert [EPOCH_LINE.match(line).group(1) for line in printed] == ["0", "1"]
    logged = (run_dir / "train.log").read_text()
    assert all(line in logged for line in printed)
    said = [line for line in logged.splitlines() if f"run directory: {run_dir}" in line]
    assert len(said) == 2 and "metrics.json" in said[1]

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    _, metrics = run_for_metrics(
        "evaluate.py", tmp_path, f"ckpt_path={checkpoint}", f"paths.data_dir={synthetic_mnist}"
    )
    [eval_dir] = (tmp_path / "evaluate" / "runs").iterdir()
    table = (eval_dir / "evaluate.log").read_text()
    assert re.search(rf"acc\s*│\s*{metrics['acc']:.4f}", table), table
