"""Shuffled index batches that a run resumed mid-epoch can pick up where it stopped."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized

from torch.utils.data import DistributedSampler


class ResumableBatchSampler(DistributedSampler):
    """Index batches of a seeded per-epoch shuffle, this rank's share, resumable mid-epoch.

    torch's DistributedSampler does the seeding (seed + epoch), the sharding across ranks and the
    padding; this adds the batching (one index list per batch, for datasets that index a whole
    batch at once) and a start position, so that a resumed run sees exactly the batches the
    interrupted one had not. Being a DistributedSampler, Lightning doesn't wrap it in its own.

    The position lives outside the sampler, in checkpoints (zoo.fault_tolerance.ResumeState):
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
