"""The label-free quality score tracks the generator's known degradation, and the quality protocol uses it."""

from __future__ import annotations

import numpy as np
import torch

from unlearnkit.data.quality import quality_scores
from unlearnkit.data.sources import ImageFolderSource
from unlearnkit.data.transforms import FaceTransform
from unlearnkit.methods.base import Pretrain


def test_stability_score_is_lower_for_degraded_copies(tiny_faces, original_ckpt):
    """The same faces score lower after heavy noise and an occluding block, for most images (> 70 %)."""
    model = Pretrain.load_from_checkpoint(original_ckpt, map_location="cpu", weights_only=True)
    source = ImageFolderSource(tiny_faces)
    transform = FaceTransform(32)
    clean = torch.stack([transform(source.load(i)) for i in range(0, len(source), 2)])
    generator = torch.Generator().manual_seed(0)
    degraded = (clean + 0.8 * torch.randn(clean.shape, generator=generator)).clamp(-1, 1)
    degraded[:, :, 8:24, 4:28] = 0
    better = quality_scores(model.backbone, clean) > quality_scores(model.backbone, degraded)
    assert better.float().mean() > 0.7, better.float().mean()


def test_serfiq_score_is_bounded_and_stochastic_passes_are_seeded(original_ckpt):
    model = Pretrain.load_from_checkpoint(original_ckpt, map_location="cpu", weights_only=True)
    images = torch.randn(6, 3, 32, 32)
    torch.manual_seed(0)
    a = quality_scores(model.backbone, images, "serfiq")
    torch.manual_seed(0)
    b = quality_scores(model.backbone, images, "serfiq")
    assert torch.equal(a, b) and ((a > 0) & (a <= 1)).all()
    stable = quality_scores(model.backbone, images, "stability")
    assert np.all(stable.numpy() <= 1 + 1e-5)
