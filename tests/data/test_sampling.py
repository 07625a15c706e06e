"""Sampling across ranks: each rank evaluates its own share of a split in eval_batch_size
batches, the shares cover the split exactly once, and Lightning leaves our samplers in place."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import RunningStage
from torch.utils.data import DataLoader, DistributedSampler

from benchmarks.imagenet_pipeline import write_jpeg_tree
from zoo.core.errors import ConfigError
from zoo.data.imagenet.imagenet import ImageNetDataModule
from zoo.data.imagenet.imagenet_synthetic import ImageNetSyntheticDataModule
from zoo.data.mnist.mnist import MNISTDataModule
from zoo.data.mnist.mnist_segmentation import MNISTSegmentationDataModule
from zoo.data.sampling import evaluation_share

EVAL_BATCH = 16


def rank(world_size: int, global_rank: int) -> SimpleNamespace:
    """What the datamodules read of the Trainer of one rank among ``world_size``."""
    strategy = SimpleNamespace(root_device=torch.device("cpu"), broadcast=lambda value: value)
    return SimpleNamespace(
        world_size=world_size,
        global_rank=global_rank,
        overfit_batches=0,
        strategy=strategy,
        lightning_module=None,
    )


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 3 classes x 3 validation images: 9, an odd number, so that the shares differ in length.
    sizes = ((40, 30), (36, 36))
    return write_jpeg_tree(tmp_path_factory.mktemp("imagenet"), 3, 2, 3, sizes)


DATAMODULES: dict[str, Callable[[Path, Path], pl.LightningDataModule]] = {
    "mnist": lambda mnist, _: MNISTDataModule(
        str(mnist), verify=False, val_size=101, eval_batch_size=EVAL_BATCH, image_size=32
    ),
    "mnist_segmentation": lambda mnist, _: MNISTSegmentationDataModule(
        str(mnist),
        verify=False,
        val_size=101,
        image_size=32,
        eval_batch_size=EVAL_BATCH,
        train_canvases=8,
        val_canvases=37,
        test_canvases=41,
    ),
    "imagenet": lambda _, root: ImageNetDataModule(
        root=str(root), classes=3, image_size=32, num_workers=0, eval_batch_size=EVAL_BATCH
    ),
    "imagenet_synthetic": lambda _, __: ImageNetSyntheticDataModule(
        image_size=32, classes=3, train_size=8, val_size=53, eval_batch_size=EVAL_BATCH
    ),
}


@pytest.mark.parametrize("world_size", [2, 3])
@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_each_rank_evaluates_its_share_in_eval_batches_and_the_shares_cover_the_split_once(
    name: str, world_size: int, synthetic_mnist: Path, imagenet_root: Path
) -> None:
    datamodule = DATAMODULES[name](synthetic_mnist, imagenet_root)
    datamodule.setup("fit")
    for split in ("val", "test"):
        seen: list[int] = []
        for global_rank in range(world_size):
            datamodule.trainer = rank(world_size, global_rank)
            loader = getattr(datamodule, f"{split}_dataloader")()
            # A DistributedSampler for this rank: Lightning leaves it in place.
            assert isinstance(loader.sampler, DistributedSampler)
            share = list(loader.sampler)
            seen += share
            sizes = [len(b[0] if isinstance(b, list | tuple) else b) for b in loader]
            expected = [min(EVAL_BATCH, len(share) - i) for i in range(0, len(share), EVAL_BATCH)]
            assert sizes == expected, (split, global_rank)
        assert sorted(seen) == list(range(len(loader.dataset))), split


def test_lightning_leaves_the_evaluation_loaders_of_a_ddp_run_in_place(
    synthetic_mnist: Path,
) -> None:
    """Lightning's own check, on a 2-process DDP Trainer (not launched): with
    use_distributed_sampler, it would swap any other sampler for a padded per-sample one."""
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False)
    datamodule = DATAMODULES["mnist"](synthetic_mnist, Path())
    datamodule.setup("fit")
    datamodule.trainer = rank(2, 1)
    loader = datamodule.val_dataloader()
    connector = trainer._data_connector
    assert connector._prepare_dataloader(loader, shuffle=False, mode=RunningStage.VALIDATING) is (
        loader
    )
    # What it does to a loader that doesn't shard itself (the bug this replaced): per-sample.
    plain = DataLoader(loader.dataset, batch_size=EVAL_BATCH)
    swapped = connector._prepare_dataloader(plain, shuffle=False, mode=RunningStage.VALIDATING)
    assert isinstance(swapped.sampler, DistributedSampler) and swapped.sampler.total_size > len(
        loader.dataset
    )  # padded: 101 samples become 102


def test_a_split_smaller_than_the_number_of_ranks_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"the val split has 2 sample.*fewer than the 3 ranks"):
        evaluation_share(rank(3, 0), range(2), "val")
