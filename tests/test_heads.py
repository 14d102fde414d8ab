"""Margin heads: hand-computed logits and losses, the centroid head, adding and dropping a class."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from unlearnkit.errors import ConfigError
from unlearnkit.heads import (
    HEADS,
    ArcFaceHead,
    CentroidHead,
    CosFaceHead,
    add_class,
    create_head,
    drop_last_class,
)

# three classes in the plane at 0°, 90° and 180°; the embedding (3, 4) has cosines 0.6, 0.8, -0.6 to them
ROWS = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
EMB = torch.tensor([[3.0, 4.0]])


def _with_rows(head):
    with torch.no_grad():
        head.weight.copy_(ROWS)
    return head


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_cosface_by_hand():
    head = _with_rows(CosFaceHead(2, 3, s=10.0, m=0.35))
    assert torch.allclose(head.logits(EMB), torch.tensor([[6.0, 8.0, -6.0]]))
    expected = [10 * (0.6 - 0.35), 8.0, -6.0]
    assert torch.allclose(head(EMB, torch.tensor([0])), torch.tensor([expected]))
    assert math.isclose(head.loss(EMB, torch.tensor([0])).item(), _ce(expected, 0), rel_tol=1e-5)


def test_arcface_by_hand():
    head = _with_rows(ArcFaceHead(2, 3, s=10.0, m=0.5))
    target = math.cos(math.acos(0.8) + 0.5)
    expected = [6.0, 10 * target, -6.0]
    assert torch.allclose(head(EMB, torch.tensor([1])), torch.tensor([expected]), atol=1e-5)
    assert math.isclose(head.loss(EMB, torch.tensor([1])).item(), _ce(expected, 1), rel_tol=1e-5)
    assert torch.allclose(head.logits(EMB), torch.tensor([[6.0, 8.0, -6.0]]))


def test_arcface_fallback_where_theta_plus_m_exceeds_pi():
    head = _with_rows(ArcFaceHead(2, 3, s=1.0, m=0.5))
    # class 2 is at cos -0.6: θ = 2.21 rad, θ + 0.5 < π, so the plain margin applies
    assert math.isclose(
        head(EMB, torch.tensor([2]))[0, 2].item(), math.cos(math.acos(-0.6) + 0.5), abs_tol=1e-5
    )
    # an embedding at cos -0.95 to class 2 (θ = 2.83, θ + 0.5 > π): the fallback cos θ − m·sin m
    emb = torch.tensor([[0.95, math.sqrt(1 - 0.95**2)]])
    out = head(emb, torch.tensor([2]))[0, 2].item()
    assert math.isclose(out, -0.95 - 0.5 * math.sin(0.5), abs_tol=1e-5)
    easy = _with_rows(ArcFaceHead(2, 3, s=1.0, m=0.5, easy_margin=True))
    assert math.isclose(easy(emb, torch.tensor([2]))[0, 2].item(), -0.95, abs_tol=1e-5)


def test_arcface_gradient_finite_at_cos_one():
    head = _with_rows(ArcFaceHead(2, 3))
    emb = torch.tensor([[1.0, 0.0]], requires_grad=True)  # exactly on class 0's row
    head.loss(emb, torch.tensor([0])).backward()
    assert torch.isfinite(emb.grad).all() and torch.isfinite(head.weight.grad).all()


def test_label_minus_one_gets_no_margin_and_no_loss():
    head = _with_rows(CosFaceHead(2, 3, s=10.0))
    emb = torch.cat([EMB, EMB])
    out = head(emb, torch.tensor([0, -1]))
    assert torch.allclose(out[1], head.logits(EMB)[0])
    assert torch.isclose(head.loss(emb, torch.tensor([0, -1])), head.loss(EMB, torch.tensor([0])))


def test_loss_is_cross_entropy_of_forward_and_trains():
    torch.manual_seed(0)
    head = create_head("cosface", 8, 5)
    emb = torch.randn(10, 8)
    labels = torch.arange(10) % 5
    assert torch.isclose(head.loss(emb, labels), F.cross_entropy(head(emb, labels), labels))
    opt = torch.optim.SGD(head.parameters(), lr=0.05)
    first = head.loss(emb, labels).item()
    for _ in range(20):
        opt.zero_grad()
        head.loss(emb, labels).backward()
        opt.step()
    assert head.loss(emb, labels).item() < first


def test_create_head_and_registry():
    assert {"arcface", "cosface"} <= set(HEADS.names())
    head = create_head("arcface", 16, 7, s=32.0, m=0.4)
    assert isinstance(head, ArcFaceHead) and head.weight.shape == (7, 16) and head.num_classes == 7
    assert (head.s, head.m) == (32.0, 0.4)
    assert (create_head("cosface", 16, 7).s, create_head("cosface", 16, 7).m) == (64.0, 0.35)
    with pytest.raises(ConfigError, match="cosface"):
        create_head("sphereface", 16, 7)


def test_centroid_head():
    centroids = ROWS.clone()
    head = CentroidHead(centroids, s=10.0, m=0.35)
    assert list(head.parameters()) == [] and "centroids" in head.state_dict()
    assert torch.allclose(head.centroids.norm(dim=1), torch.ones(3))
    assert head.num_classes == 3 and head.embedding_size == 2
    assert torch.allclose(head.logits(EMB), torch.tensor([[6.0, 8.0, -6.0]]))
    assert torch.allclose(head(EMB, torch.tensor([1])), torch.tensor([[6.0, 10 * (0.8 - 0.35), -6.0]]))
    emb = EMB.clone().requires_grad_(True)
    head.loss(emb, torch.tensor([1])).backward()
    assert emb.grad is not None
    centroids.zero_()  # the head keeps its own copy
    assert head.centroids.abs().sum() > 0
    with pytest.raises(ConfigError):
        CentroidHead(torch.randn(4))


def test_add_and_drop_class():
    head = _with_rows(CosFaceHead(2, 3, s=10.0))
    wide = add_class(head, generator=torch.Generator().manual_seed(0))
    assert wide.num_classes == 4 and head.num_classes == 3
    assert torch.equal(wide.weight[:3], head.weight) and wide.weight.requires_grad
    assert wide(EMB, torch.tensor([3])).shape == (1, 4)
    # train toward the shadow class only, then remove it: the original rows come back in shape
    opt = torch.optim.SGD(wide.parameters(), lr=0.1)
    wide.loss(EMB, torch.tensor([3])).backward()
    opt.step()
    narrow = drop_last_class(wide)
    assert isinstance(narrow, CosFaceHead) and narrow.weight.shape == (3, 2)
    assert torch.equal(narrow.weight, wide.weight[:3].detach())
    assert isinstance(narrow.weight, torch.nn.Parameter)
    with pytest.raises(ConfigError):
        drop_last_class(CosFaceHead(2, 1))


def test_add_and_drop_class_on_centroid_head():
    head = CentroidHead(ROWS.clone())
    wide = add_class(head)
    assert wide.num_classes == 4 and list(wide.parameters()) == []
    assert torch.allclose(wide.centroids.norm(dim=1), torch.ones(4))
    assert torch.equal(drop_last_class(wide).centroids, head.centroids)
