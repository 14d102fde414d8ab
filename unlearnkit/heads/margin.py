"""Margin-softmax heads (CosFace, ArcFace) and a fixed-centroid head for pseudo-labels.

All heads work on cosines between L2-normalised embeddings and normalised class rows:
``logits`` is ``s·cos`` without a margin (inference, teacher outputs, FGSM targets), ``forward``
applies the margin to the target class only, ``loss`` is the cross-entropy of ``forward``.
A label of -1 means "no target" (no margin, ignored by the loss), as in insightface.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.registry import Registry

HEADS: Registry = Registry("head")


def _replace_target(cos: torch.Tensor, labels: torch.Tensor, fn) -> torch.Tensor:
    """Returns ``cos`` with each row's target entry replaced by ``fn(target)`` (rows labelled -1 untouched)."""
    valid = (labels >= 0).unsqueeze(1)
    index = labels.clamp(min=0).unsqueeze(1)
    target = cos.gather(1, index)
    return cos.scatter(1, index, torch.where(valid, fn(target), target))


class CosineHead(nn.Module):
    """Cosine classifier: subclasses give the class rows (``class_rows``) and the target-class margin."""

    def __init__(self, embedding_size: int, s: float = 64.0, m: float = 0.35):
        super().__init__()
        self.embedding_size = embedding_size
        self.s = s
        self.m = m

    @property
    def num_classes(self) -> int:
        return self.class_rows().shape[0]

    def class_rows(self) -> torch.Tensor:
        raise NotImplementedError

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.class_rows(), dim=1))

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``s·cos`` to every class, no margin."""
        return self.s * self.cosine(embeddings)

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``s·cos`` with the margin applied to each sample's target class."""
        return self.s * _replace_target(self.cosine(embeddings), labels, self.margin)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self(embeddings, labels), labels, ignore_index=-1)

    def extra_repr(self) -> str:
        return f"embedding_size={self.embedding_size}, num_classes={self.num_classes}, s={self.s}, m={self.m}"


class MarginHead(CosineHead):
    """A cosine classifier with one trainable ``weight`` row per class."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(embedding_size, s, m)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def class_rows(self) -> torch.Tensor:
        return self.weight


@HEADS.register("cosface")
class CosFaceHead(MarginHead):
    """CosFace / AM-softmax: the target cosine minus ``m``."""

    def __init__(self, embedding_size: int, num_classes: int, s: float = 64.0, m: float = 0.35):
        super().__init__(embedding_size, num_classes, s, m)

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        return target_cos - self.m


@HEADS.register("arcface")
class ArcFaceHead(MarginHead):
    """ArcFace: the target cosine becomes ``cos(θ + m)``.

    Where ``θ + m > π`` that would no longer decrease with θ, so (as insightface does) the target
    falls back to ``cos θ − m·sin m``; with ``easy_margin`` the margin is applied only where ``cos θ > 0``.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        s: float = 64.0,
        m: float = 0.5,
        easy_margin: bool = False,
    ):
        super().__init__(embedding_size, num_classes, s, m)
        self.easy_margin = easy_margin

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        # clamp keeps the sqrt's gradient finite at cos = ±1
        sin = torch.sqrt((1.0 - target_cos * target_cos).clamp_min(1e-9))
        cos_theta_m = target_cos * math.cos(self.m) - sin * math.sin(self.m)
        if self.easy_margin:
            return torch.where(target_cos > 0, cos_theta_m, target_cos)
        threshold = math.cos(math.pi - self.m)
        return torch.where(
            target_cos > threshold, cos_theta_m, target_cos - math.sin(math.pi - self.m) * self.m
        )


class CentroidHead(CosineHead):
    """Cosine-to-centroid logits over fixed (non-trainable) centroids, with a CosFace margin.

    Used by the label-free variants: the classes are K-means clusters of teacher embeddings.
    """

    def __init__(self, centroids: torch.Tensor, s: float = 64.0, m: float = 0.35):
        if centroids.dim() != 2:
            raise ConfigError(f"centroids must be a (K, d) matrix, got shape {tuple(centroids.shape)}")
        super().__init__(centroids.shape[1], s, m)
        self.register_buffer("centroids", F.normalize(centroids.detach().float(), dim=1).clone())

    def class_rows(self) -> torch.Tensor:
        return self.centroids

    def margin(self, target_cos: torch.Tensor) -> torch.Tensor:
        return target_cos - self.m


def create_head(name: str, embedding_size: int, num_classes: int, **kwargs) -> MarginHead:
    """Builds a registered head (``cosface`` or ``arcface``)."""
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}: choose one of {', '.join(HEADS.names())}")
    return HEADS.get(name)(embedding_size, num_classes, **kwargs)


def add_class(head: CosineHead, generator: torch.Generator | None = None) -> CosineHead:
    """Returns a copy of ``head`` with one more class row (boundary expanding's shadow class).

    The new row is random (a trainable row for margin heads; a fixed random unit direction for a
    CentroidHead); the existing rows are copied, so ``head`` itself is left unchanged.
    """
    rows = head.class_rows().detach()
    extra = torch.randn(1, rows.shape[1], generator=generator).to(rows) * 0.01
    new = copy.deepcopy(head)
    if isinstance(head, CentroidHead):
        new.centroids = F.normalize(torch.cat([rows, extra]), dim=1)
    else:
        new.weight = nn.Parameter(torch.cat([rows, extra]), requires_grad=head.weight.requires_grad)
    return new


def drop_last_class(head: CosineHead) -> CosineHead:
    """Returns a copy of ``head`` without its last class row (removes boundary expanding's shadow class)."""
    if head.num_classes < 2:
        raise ConfigError("cannot drop the only class of a head")
    new = copy.deepcopy(head)
    if isinstance(head, CentroidHead):
        new.centroids = head.centroids[:-1].clone()
    else:
        new.weight = nn.Parameter(head.weight.detach()[:-1].clone(), requires_grad=head.weight.requires_grad)
    return new
