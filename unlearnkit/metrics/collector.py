"""Gather every evaluation sample's embedding exactly once, also under DDP.

Distributed samplers may pad an evaluation set with repeated samples; sample ids travel with the
embeddings, so after the ``cat`` gather each id is kept once, ordered by id, whatever the rank order.
``EvalEmbeddings`` holds what one model's collectors gathered: the input of the metric suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from unlearnkit.protocols import GROUP_ID


class EmbeddingCollector(Metric):
    """List states of embeddings with their labels, sample ids and groups; ``compute`` de-duplicates."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor | None = None,
               groups: torch.Tensor | None = None) -> None:
        n = embeddings.shape[0]
        self.embeddings.append(embeddings.detach().float())
        self.ids.append(ids.detach().long().reshape(n))
        self.labels.append((labels if labels is not None else torch.full((n,), -1)).detach().long()
                           .reshape(n).to(self.device))
        self.groups.append((groups if groups is not None else torch.zeros(n)).detach().long()
                           .reshape(n).to(self.device))

    def compute(self) -> dict[str, torch.Tensor]:
        if len(self.ids) == 0:  # a list of batches, or one tensor once synced over ranks
            return {"embeddings": torch.empty(0, 0), "labels": torch.empty(0, dtype=torch.long),
                    "ids": torch.empty(0, dtype=torch.long), "groups": torch.empty(0, dtype=torch.long)}
        ids = dim_zero_cat(self.ids)
        unique, first = unique_first(ids)
        return {
            "embeddings": dim_zero_cat(self.embeddings)[first],
            "labels": dim_zero_cat(self.labels)[first],
            "ids": unique,
            "groups": dim_zero_cat(self.groups)[first],
        }


def unique_first(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted unique ids and the position of each one's first occurrence."""
    unique, inverse = torch.unique(ids, sorted=True, return_inverse=True)
    positions = torch.arange(ids.numel(), device=ids.device)
    first = torch.full((unique.numel(),), ids.numel(), dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return unique, first


@dataclass
class EvalEmbeddings:
    """Gathered embeddings of one model: the retrieval set (``EmbeddingCollector.compute``'s tensors by
    field: embeddings, labels, ids, groups) and each pair set's images (embeddings in image order)."""

    retrieval: dict[str, torch.Tensor]
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)

    def group(self, *names: str) -> torch.Tensor:
        """Boolean mask of the retrieval samples in any of the evaluation groups ``names``."""
        codes = torch.tensor([GROUP_ID[n] for n in names])
        return torch.isin(self.retrieval["groups"].cpu(), codes)
