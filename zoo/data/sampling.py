"""Batching the datamodules share: shuffled index batches that a run resumed mid-epoch can pick
up where it stopped, each rank's share of the evaluation splits, and each split's batch size.

Every loader's sampler here is a DistributedSampler already, made for this rank: Lightning leaves
those in place (``Trainer(use_distributed_sampler=...)`` either way), where it would otherwise
swap in its own — per-sample, which turned our index batches into one-image batches, and padded,
which counts some evaluation samples twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from zoo.core.errors import ConfigError


class ResumableBatchSampler(DistributedSampler):
    """Index batches of a seeded per-epoch shuffle, this rank's share, resumable mid-epoch.

    torch's DistributedSampler does the seeding (seed + epoch), the sharding across ranks and the
    padding; this adds the batching (one index list per batch, for datasets that index a whole
    batch at once) and a start position, so that a resumed run sees exactly the batches the
    interrupted one had not. Being a DistributedSampler, Lightning doesn't wrap it in its own.

    The position lives outside the sampler, in checkpoints (zoo.training.resume.ResumeState):
    only the training loop knows how many batches were trained on, since loader workers draw
    indices ahead of it.
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._resume_epoch = -1
        self._resume_batches = 0

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def resume_at(self, epoch: int, batches_seen: int, seed: int) -> None:
        """Continue the shuffle of ``seed`` at ``epoch``, skipping its first ``batches_seen``."""
        self.seed = seed
        self.set_epoch(epoch)
        self._resume_epoch, self._resume_batches = epoch, batches_seen

    def __iter__(self) -> Iterator[list[int]]:  # type: ignore[override]
        # Read at the first next(), after Lightning's set_epoch for this epoch.
        indices = list(super().__iter__())
        start = self._resume_batches if self.epoch == self._resume_epoch else 0
        for first in range(start * self.batch_size, len(indices), self.batch_size):
            yield indices[first : first + self.batch_size]


def _replicas_and_rank(trainer: pl.Trainer | None) -> tuple[int, int]:
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def shuffled_batches(
    trainer: pl.Trainer | None, dataset: Sized, batch_size: int
) -> ResumableBatchSampler:
    """The training order of a run: this rank's share of a shuffle all ranks draw alike."""
    replicas, rank = _replicas_and_rank(trainer)
    # The run's seed (seed_everything sets torch's), else a random one; rank 0's, so that all
    # ranks shuffle alike. Checkpoints keep it with the position (zoo.training.resume).
    seed = torch.initial_seed() % 2**63
    if trainer is not None:
        seed = trainer.strategy.broadcast(seed)
    return ResumableBatchSampler(dataset, batch_size, seed=seed, num_replicas=replicas, rank=rank)


def evaluation_share(
    trainer: pl.Trainer | None, dataset: Sized, split: str
) -> UnrepeatedDistributedSampler:
    """This rank's share of a validation or test split, in order: samples ``rank``,
    ``rank + world_size``, ... Every sample is evaluated on exactly one rank, and none twice.

    torch's DistributedSampler pads the shares to one length by repeating samples, so that
    training ranks step together; evaluation needs no lockstep (metrics are reduced once, at the
    end), and a repeated sample would be counted twice. Lightning's unpadded sampler, which it
    uses for predictions, lets the shares differ by one sample instead. Batch it with the
    loader's ``batch_size``, which Lightning keeps when it swaps samplers (``overfit_batches``).
    """
    replicas, rank = _replicas_and_rank(trainer)
    if len(dataset) < replicas:
        # A rank with nothing to evaluate would wait forever for the others' first batch.
        raise ConfigError(
            f"the {split} split has {len(dataset)} sample(s), fewer than the {replicas} ranks "
            "that evaluate it: use fewer devices or a larger split"
        )
    return UnrepeatedDistributedSampler(dataset, num_replicas=replicas, rank=rank, shuffle=False)


class ResumableTrainingOrder:
    """Mixin for the zoo's datamodules (``splits["train"]``, ``hparams.batch_size``): the run's
    training order, kept as ``ZooDataModule.train_sampler``, where zoo.training.resume finds it."""

    train_sampler: ResumableBatchSampler | None = None

    def training_order(self) -> ResumableBatchSampler:
        """Made once, in setup("fit"): before a checkpoint's position is restored into it."""
        if self.train_sampler is None:
            self.train_sampler = shuffled_batches(
                self.trainer, self.splits["train"], self.hparams.batch_size
            )
        return self.train_sampler


class LoaderPerSplit:
    """Lightning's three dataloader hooks, for datamodules that build each split's loader in one
    ``_loader(split)``."""

    def _loader(self, split: str) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


def split_batch_size(hparams: Mapping[str, Any], split: str) -> int:
    """``batch_size`` for training; ``eval_batch_size`` for val and test, where it is set."""
    if split == "train":
        return hparams["batch_size"]
    return hparams.get("eval_batch_size") or hparams["batch_size"]


def as_is(batch: Any) -> Any:
    """The collate of batches that the dataset already made (IndexedTensors, WholeBatches)."""
    return batch


class WholeBatches(Dataset):
    """A dataset whose items are whole batches: ``batches[indices]`` is
    ``collate([dataset[i] for i in indices])``, fetched and collated in a loader worker.

    Written here because torch's DataLoader does this only for a ``batch_sampler``, which
    Lightning rebuilds (and breaks) when it shards data across ranks; a ``sampler`` of index
    batches with ``batch_size=None`` it leaves alone when it is a DistributedSampler.
    """

    def __init__(self, dataset: Sequence[Any], collate: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate = collate

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: list[int]) -> Any:
        return self.collate([self.dataset[i] for i in indices])
