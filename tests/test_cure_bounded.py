"""CureBounded (ours): the forget term stops at its target, the retain term ignores rotations, bad options are
one-line errors. Its behaviour against the oracle is in test_behaviour.py; the registry's tests run it too."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.errors import ConfigError
from unlearnkit.methods.cure_bounded import CureBounded


def loss_on(forget: torch.Tensor, retain: torch.Tensor, teacher: torch.Tensor, **options) -> dict:
    """The loss terms with embeddings given directly: the student embeds a batch as ``forget``/``retain``, θ0 as
    ``teacher``; two retain clusters, centroids e0 and e1, target cosine 0.6 and 0.9."""
    model = CureBounded(**options)
    model.centroids, model.targets = torch.eye(2, 3), torch.tensor([0.6, 0.9])
    model.embed = lambda images: images
    model.teacher_embed = lambda images: teacher
    return model.unlearning_loss({"forget": {"image": forget}, "retain": {"image": retain}})


def test_forget_term_pushes_only_down_to_its_cluster_target():
    teacher = F.normalize(torch.tensor([[1.0, 0.1, 0.0], [0.1, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), dim=1)
    below = F.normalize(torch.tensor([[0.5, 0.0, 1.0], [0.0, 0.8, 1.0]]), dim=1)  # cos to e0 0.45 < 0.6; e1 0.62 < 0.9
    assert loss_on(below, teacher[2:], teacher)["forget"] == 0
    above = teacher[:2]  # cos 0.995 to e0 (target 0.6) and to e1 (target 0.9): pushed by the excess
    expected = ((above[0, 0] - 0.6) + (above[1, 1] - 0.9)) / 2
    assert loss_on(above, teacher[2:], teacher)["forget"] == pytest.approx(float(expected))


def test_retain_structure_term_ignores_a_rotation_and_sees_a_distortion():
    teacher = F.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    rotation = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))[0]
    forget = teacher[:2]
    rotated = loss_on(forget, teacher[2:] @ rotation, teacher)
    assert rotated["structure"] == pytest.approx(0.0, abs=1e-10) and rotated["fm"] > 0  # the pointwise term sees it
    distorted = F.normalize(teacher[2:] + torch.tensor([1.0, 0.0, 0.0]), dim=1)
    assert loss_on(forget, distorted, teacher)["structure"] > 1e-3


@pytest.mark.parametrize("options, named", [({"target_quantile": 1.5}, "target_quantile"),
                                            ({"retain_clusters": 1}, "retain_clusters"),
                                            ({"lambda_fm": -1.0}, "lambda_fm")])
def test_bad_options_are_one_line_errors(options, named):
    with pytest.raises(ConfigError, match=named) as err:
        CureBounded(**options)
    assert "\n" not in str(err.value)
