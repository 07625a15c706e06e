"""The classifiers' accuracy metrics: the same values as torchmetrics' own, cheaper."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy

from zoo.tasks.classification import TopKAccuracy, accuracy_metrics


@pytest.mark.parametrize(("num_classes", "k"), [(10, 5), (1000, 5), (6, 5)])
def test_top_k_accuracy_equals_torchmetrics_top_k_path(num_classes: int, k: int) -> None:
    generator = torch.Generator().manual_seed(0)
    ours = TopKAccuracy(num_classes, top_k=k)
    theirs = MulticlassAccuracy(num_classes, top_k=k, average="micro")
    for batch in (128, 37, 1):
        logits = torch.randn(batch, num_classes, generator=generator)
        targets = torch.randint(0, num_classes, (batch,), generator=generator)
        # Some targets among the best k, some not.
        logits[torch.arange(batch), targets] += 4 * torch.rand(batch, generator=generator)
        ours.update(logits, targets)
        theirs.update(logits, targets)
    assert ours.compute() == theirs.compute()
    assert 0 < float(ours.compute()) < 1


def test_top_5_is_there_only_beyond_5_classes() -> None:
    assert set(accuracy_metrics(10)) == {"acc", "acc_top5"}
    assert set(accuracy_metrics(5)) == {"acc"}
