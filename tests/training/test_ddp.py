"""Several ranks measure what one device measures: a 2-process CPU (gloo) run tests each rank's
share of the split in eval_batch_size batches, every image once, and its test/acc is
evaluate.py's on the same checkpoint.

DDP runs as train.py in a subprocess: under pytest, Lightning's extra rank would re-run pytest.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra

from tests.conftest import (
    compose_config,
    run_for_metrics,
    synthetic_train_overrides,
    write_synthetic_mnist,
)
from zoo.evaluation.run import evaluate

TEST_IMAGES = 201  # odd: two shares of 101 and 100, which padding would make 101 and 101
EVAL_BATCH = 64


@pytest.mark.slow
def test_two_cpu_ranks_test_the_whole_split_in_eval_batches_as_evaluate_py_does(
    tmp_path: Path,
) -> None:
    data_dir = write_synthetic_mnist(tmp_path / "mnist", train=640, test=TEST_IMAGES)
    recorded = tmp_path / "batches"
    _, metrics = run_for_metrics(
        "train.py",
        tmp_path / "logs",
        *synthetic_train_overrides(data_dir),
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.strategy.timeout.seconds=60",
        "trainer.max_epochs=1",
        # A few steps only: an accuracy well below 1, where a miscount would show.
        "trainer.limit_train_batches=3",
        f"data.eval_batch_size={EVAL_BATCH}",
        "logger=none",
        "+callbacks.record._target_=tests.training.ddp_helpers.RecordTestBatches",
        f"+callbacks.record.directory={recorded}",
        timeout=240,
    )
    sizes = {rank: json.loads((recorded / f"rank{rank}.json").read_text()) for rank in (0, 1)}
    assert sizes == {0: [64, 37], 1: [64, 36]}

    [best] = (tmp_path / "logs" / "train" / "runs").glob("*/checkpoints/epoch*.ckpt")
    overrides = [f"ckpt_path={best}", f"paths.data_dir={data_dir}", "trainer.accelerator=cpu",
                 "trainer.enable_progress_bar=false", "logger=none"]  # fmt: skip
    try:
        report = evaluate(compose_config(overrides, tmp_path, "evaluate"), tmp_path)
    finally:
        GlobalHydra.instance().clear()
    assert report["samples"] == TEST_IMAGES
    assert 0.2 < report["acc"] < 1.0
    assert metrics["test/acc"] == report["acc"]
    assert abs(metrics["test/loss"] - report["loss"]) < 1e-5
