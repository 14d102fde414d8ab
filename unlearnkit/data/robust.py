"""Loading that survives bad files and interrupted runs.

- ``BadImages`` (``data.on_bad_image: skip``): an unreadable image is counted once and replaced by the next
  readable image of the same identity in the same part (forget / retain / held-out), so batch sizes, P×K
  batches and embedding tables keep their shape. The count is logged as ``data/bad_images``.
- ``ResumableSampler`` + ``ResumableLoader``: training loaders that pick up mid-epoch. Lightning stores a
  loader's ``state_dict()`` in every checkpoint (the epoch and the batches served in the current pass) and
  hands it back on resume; the resumed pass then starts after those batches, without reading their images.
  The sampler also decides each sample's horizontal flip from (seed, epoch, position) rather than from the
  process's random state, which neither DataLoader workers nor a resumed run share: a run resumed from a
  checkpoint trains on exactly the batches the uninterrupted run would have.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from unlearnkit.errors import DataError

log = logging.getLogger(__name__)


class BadImages:
    """Skip-and-count for unreadable images. ``kinds[i]`` groups the images that may replace each other.

    The flags live in shared memory, so images found bad inside DataLoader workers are counted too.
    """

    def __init__(self, kinds: np.ndarray) -> None:
        self.kinds = np.asarray(kinds)
        self.flags = torch.zeros(len(self.kinds), dtype=torch.uint8).share_memory_()

    def load(self, source, index: int):
        """Image ``index`` of ``source``, or the next readable one of its kind if it cannot be read."""
        try:
            return source.load(index)
        except DataError as err:
            self._mark(index, err)
        peers = np.flatnonzero(self.kinds == self.kinds[index])
        for other in np.roll(peers, -int(np.searchsorted(peers, index, side="right"))):
            if other == index or self.flags[other]:
                continue
            try:
                return source.load(int(other))
            except DataError as err:
                self._mark(int(other), err)
        raise DataError(f"{source.describe(index)} cannot be read and no other image of that identity in its part "
                        "can replace it: repair the data set")

    def _mark(self, index: int, err: DataError) -> None:
        if not self.flags[index]:
            self.flags[index] = 1
            log.warning("skipping an unreadable image (data.on_bad_image: skip): %s", err)

    def count(self, trainer=None) -> int:
        """Distinct unreadable images met so far, over all ranks when ``trainer`` runs several."""
        flags = self.flags
        if trainer is not None and trainer.world_size > 1:
            flags = trainer.strategy.reduce(flags.int().to(trainer.strategy.root_device), reduce_op="max")
        return int(flags.sum())


class ResumableSampler(Sampler):
    """Wraps an epoch-seeded sampler: yields ``(index, flip)`` and starts a pass at position ``start``."""

    def __init__(self, sampler: Sampler, seed: int) -> None:
        self.sampler, self.seed, self.epoch, self.start = sampler, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        start, self.start = self.start, 0
        flips = np.random.default_rng([self.seed, self.epoch, 1])
        for position, index in enumerate(self.sampler):
            flip = bool(flips.random() < 0.5)  # drawn for every position, so skipping keeps the sequence
            if position >= start:
                yield int(index), flip


class ResumableLoader(DataLoader):
    """A training loader whose ``state_dict()`` says where the current pass is (Lightning checkpoints it)."""

    def __init__(self, dataset, sampler: ResumableSampler, **kwargs) -> None:
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.served = 0
        self._resume_at: tuple[int, int] | None = None

    def __iter__(self):
        skip = 0
        if self._resume_at is not None and self._resume_at[0] == self.sampler.epoch:
            skip = self._resume_at[1]
        self._resume_at = None
        self.sampler.start = skip * self.batch_size
        self.served = skip
        for batch in super().__iter__():
            self.served += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": self.served}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches"]))
