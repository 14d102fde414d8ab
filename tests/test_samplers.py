"""Training samplers: no epoch ends in a batch of one image (BatchNorm cannot train on it)."""

from __future__ import annotations

import lightning as L
from conftest import ARCH, quiet_trainer, tiny_datamodule

from unlearnkit.data.samplers import ShuffleSampler


def test_an_epoch_never_ends_in_a_single_image_batch():
    assert len(ShuffleSampler(range(49), batch_size=8)) == 50  # 6 × 8 + 1 → one more draw
    assert len(ShuffleSampler(range(48), batch_size=8)) == 48  # nothing else changes
    assert len(ShuffleSampler(range(50), batch_size=8)) == 50
    assert len(ShuffleSampler(range(49), world_size=2, batch_size=8)) == 26  # per rank: 25 = 3 × 8 + 1 → 26
    assert len(ShuffleSampler(range(50), world_size=3, batch_size=16)) == 18  # 17 = 16 + 1 → 18
    sampler = ShuffleSampler(range(49), batch_size=8)
    assert sorted(set(sampler)) == list(range(49))  # every image still drawn


def test_pretraining_runs_when_the_training_set_is_one_more_than_batches(tiny_faces):
    """72 training images in batches of 71: the last batch held one image and BatchNorm stopped the run."""
    from unlearnkit.methods.base import Pretrain

    L.seed_everything(0)
    dm = tiny_datamodule(tiny_faces, batch_size=71)
    dm.setup()
    assert len(dm.part_indices("train")) == 72
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(Pretrain(**ARCH, lr=0.05), datamodule=dm)
