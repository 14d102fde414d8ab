"""Rank-aware training samplers: seeded per epoch, sharded across DDP ranks, P×K identity batches.

They shard by rank themselves, so the trainer runs with ``use_distributed_sampler=False`` and batches keep
their P×K structure under DDP. Every rank gets the same number of samples (hence of batches): an epoch is
**padded** up to a multiple of the world size, as ``DistributedSampler(drop_last=False)`` does, with a few
extra draws (samples from the next permutation; extra P×K batches). A rank with one step more than the others
would wait for a gradient all-reduce the others never start: a desynchronised or hung DDP run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from unlearnkit.errors import DataError


class _EpochSampler(Sampler[int]):
    def __init__(self, seed: int, rank: int, world_size: int) -> None:
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])


class ShuffleSampler(_EpochSampler):
    """A seeded permutation of ``indices`` (with replacement when ``num_samples`` exceeds them), sharded by rank.

    Each rank gets ``ceil(num_samples / world_size)`` samples: the epoch is padded with the start of the next
    permutation so that all ranks run the same number of steps. Given the ``batch_size``, an epoch whose last
    batch would hold a single image gets one more draw: BatchNorm cannot train on a batch of one.
    """

    def __init__(self, indices, num_samples: int | None = None, seed: int = 0, rank: int = 0, world_size: int = 1,
                 batch_size: int | None = None):
        super().__init__(seed, rank, world_size)
        self.indices = np.asarray(indices)
        self.num_samples = num_samples or len(self.indices)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[int]:
        rng = self._rng()
        total = len(self) * self.world_size
        reps = math.ceil(total / len(self.indices))
        order = np.concatenate([rng.permutation(self.indices) for _ in range(reps)])[:total]
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        per_rank = math.ceil(self.num_samples / self.world_size)
        if self.batch_size and self.batch_size > 1 and per_rank > 1 and per_rank % self.batch_size == 1:
            per_rank += 1
        return per_rank


class PKSampler(_EpochSampler):
    """Batches of P identities × K images, so every batch has same-identity pairs (dispersion losses).

    ``labels`` are what batches are grouped by: identities, or the pseudo-labels of a label-free method (which
    must never see identities). Groups with fewer than K images are sampled with replacement; groups with one
    image are skipped (they form no pair). Yields flat indices: consecutive ``P*K`` chunks are the batches.
    ``num_batches`` is padded up to a multiple of the world size with extra P×K draws, so every rank gets
    ``ceil(num_batches / world_size)`` batches.
    """

    def __init__(self, indices, labels, p: int, k: int, num_batches: int | None = None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        super().__init__(seed, rank, world_size)
        self.p, self.k = p, k
        groups: dict[int, list[int]] = {}
        for i, y in zip(np.asarray(indices).tolist(), np.asarray(labels).tolist()):
            groups.setdefault(y, []).append(i)
        self.groups = [np.asarray(v) for _, v in sorted(groups.items()) if len(v) >= 2]
        if not self.groups:
            raise DataError("P×K sampling needs at least one identity (or pseudo-label cluster) with two or more "
                            "images in this part: forget more images per identity, or use a method without P×K "
                            "batches")
        total = sum(len(g) for g in self.groups)
        self.num_batches = num_batches or max(1, math.ceil(total / (p * k)))
        self.batches_per_rank = math.ceil(self.num_batches / world_size)

    @property
    def batch_size(self) -> int:
        return min(self.p, len(self.groups)) * self.k

    def __iter__(self) -> Iterator[int]:
        rng = self._rng()
        batches = []
        p = min(self.p, len(self.groups))
        for _ in range(self.batches_per_rank * self.world_size):
            chosen = rng.choice(len(self.groups), size=p, replace=False)
            batch = [rng.choice(self.groups[g], size=self.k, replace=len(self.groups[g]) < self.k) for g in chosen]
            batches.append(np.concatenate(batch))
        return iter(np.concatenate(batches[self.rank :: self.world_size]).tolist())

    def __len__(self) -> int:
        return self.batches_per_rank * self.batch_size


def shard_contiguous(indices, rank: int, world_size: int) -> np.ndarray:
    """Evaluation shards: every sample exactly once over all ranks (sizes differ by at most one)."""
    return np.array_split(np.asarray(indices), world_size)[rank]
