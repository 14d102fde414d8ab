"""torchmetrics wrappers of the functional metrics, for use inside Lightning loops and under DDP.

Each metric keeps list states gathered with ``cat`` and carries sample ids: a distributed sampler may repeat
samples to even out ranks, so ``compute`` keeps each id once (its first occurrence), ordered by id, and the
result does not depend on how samples were spread over ranks or batches. Values are computed in float32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from unlearnkit.metrics import functional as MF

__all__ = ["RetrievalMetrics", "ClusterCompactness", "VerificationAccuracy"]


def _first_per_id(ids: torch.Tensor) -> torch.Tensor:
    """Positions of each id's first occurrence, in increasing id order."""
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    first = torch.full((unique.numel(),), ids.numel(), dtype=torch.long, device=ids.device)
    return first.scatter_reduce_(0, inverse, torch.arange(ids.numel(), device=ids.device), reduce="amin")


def _flat(x, n: int, device, dtype=torch.long) -> torch.Tensor:
    return torch.as_tensor(x, device=device).detach().reshape(n).to(dtype)


class _EmbeddingMetric(Metric):
    """Stores embeddings, labels, ids and an optional group per sample."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, groups: Mapping[int, str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.group_names = dict(groups) if groups is not None else None
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def _store(self, embeddings: torch.Tensor, labels, ids, groups) -> None:
        n = embeddings.shape[0]
        if self.group_names is not None and groups is None:
            raise ValueError(f"{type(self).__name__} was built with groups {self.group_names}: pass a group per sample")
        self.embeddings.append(embeddings.detach().float().reshape(n, -1))
        self.labels.append(_flat(labels, n, self.device))
        self.ids.append(_flat(ids, n, self.device))
        self.groups.append(_flat(groups if groups is not None else torch.zeros(n), n, self.device))

    def _gathered(self):
        """(embeddings, labels, groups) once per id, ordered by id."""
        if not self.ids:
            raise ValueError(f"{type(self).__name__}.compute() called before any update()")
        first = _first_per_id(dim_zero_cat(self.ids))
        return (dim_zero_cat(self.embeddings)[first], dim_zero_cat(self.labels)[first],
                dim_zero_cat(self.groups)[first])

    def _per_group(self, fn, groups: torch.Tensor):
        if self.group_names is None:
            return fn(None)
        return {name: fn(groups == code) for code, name in self.group_names.items()}


class RetrievalMetrics(_EmbeddingMetric):
    """Leave-one-out mAP and R@k (``functional.retrieval``) over everything seen since the last reset.

    With ``groups`` (e.g. ``{0: "forget", 1: "retain"}``) ``compute`` returns ``{name: {...}}``: each group's
    images query the whole gallery of gathered images.
    """

    higher_is_better = True

    def __init__(self, ks: Sequence[int] = (1, 5), groups: Mapping[int, str] | None = None,
                 chunk_size: int = 1024, **kwargs) -> None:
        super().__init__(groups, **kwargs)
        self.ks, self.chunk_size = tuple(ks), chunk_size

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor,
               query_groups: torch.Tensor | None = None) -> None:
        self._store(embeddings, labels, ids, query_groups)

    def compute(self):
        z, labels, groups = self._gathered()
        return self._per_group(
            lambda query: MF.retrieval(z, labels, ks=self.ks, query_mask=query, chunk_size=self.chunk_size), groups)


class ClusterCompactness(_EmbeddingMetric):
    """Cluster Compactness Score (``functional.compactness``), per group when ``groups`` is given."""

    higher_is_better = True

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor,
               groups: torch.Tensor | None = None) -> None:
        self._store(embeddings, labels, ids, groups)

    def compute(self):
        z, labels, groups = self._gathered()
        return self._per_group(lambda g: MF.compactness(z if g is None else z[g], labels if g is None else labels[g]),
                               groups)


class VerificationAccuracy(Metric):
    """insightface-style 10-fold verification accuracy and TAR@FAR (``functional.verification``).

    Pairs are ordered by ``pair_ids`` before the folds are cut, so give each pair its index in the pair list.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, folds: int = 10, far: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folds, self.far = folds, far
        self.add_state("emb1", default=[], dist_reduce_fx="cat")
        self.add_state("emb2", default=[], dist_reduce_fx="cat")
        self.add_state("issame", default=[], dist_reduce_fx="cat")
        self.add_state("pair_ids", default=[], dist_reduce_fx="cat")

    def update(self, emb1: torch.Tensor, emb2: torch.Tensor, issame: torch.Tensor, pair_ids: torch.Tensor) -> None:
        n = emb1.shape[0]
        self.emb1.append(emb1.detach().float().reshape(n, -1))
        self.emb2.append(emb2.detach().float().reshape(n, -1))
        self.issame.append(_flat(issame, n, self.device))  # int64: gloo cannot gather bool tensors
        self.pair_ids.append(_flat(pair_ids, n, self.device))

    def compute(self) -> dict[str, float]:
        if not self.pair_ids:
            raise ValueError("VerificationAccuracy.compute() called before any update()")
        first = _first_per_id(dim_zero_cat(self.pair_ids))
        return MF.verification(dim_zero_cat(self.emb1)[first], dim_zero_cat(self.emb2)[first],
                               dim_zero_cat(self.issame)[first].bool(), folds=self.folds, far=self.far)
