"""Boundary expanding (BE): add a shadow class, train D_f into it, then drop it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.search_space import Knob, LogUniform, SearchSpace


class BoundaryExpand(UnlearningMethod):
    """Margin loss on (x_f, shadow) over the head widened by one shadow row; the row is never used after.

    Source: Chen et al., "Boundary Unlearning" (CVPR 2023); same recipe as boundary shrink. Ours: the
    shadow row is a separate parameter (so checkpoints keep the original head's shape) and "dropping" it
    means evaluation and later use ignore it.
    """

    tuning = SearchSpace(lr=LogUniform(1e-6, 1e-3), strength=Knob("weight_decay", (0.0, 0.0005)))  # the demo needs 1e-4
    # the authors' lr 1e-5 is for 10 epochs at scale; in the demo's 5 epochs it leaves θ0 unchanged, 1e-4 does not
    demo_overrides = {"lr": 1e-4}

    def __init__(self, lr: float = 1e-5, weight_decay: float = 0.0, **kwargs) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay, **kwargs)
        generator = torch.Generator().manual_seed(0)
        self.shadow = nn.Parameter(torch.randn(1, self.hparams.embedding_size, generator=generator) * 0.01)

    def unlearning_loss(self, batch):
        data = batch["forget"]
        z = self.embed(data["image"])
        head = self.active_head
        cos = torch.cat([head.cosine(z), F.linear(z, F.normalize(self.shadow, dim=1))], dim=1)
        target = torch.full_like(data["label"], cos.shape[1] - 1)
        rows = torch.arange(cos.shape[0], device=cos.device)
        cos = cos.index_put((rows, target), head.margin(cos[rows, target]))
        forget = F.cross_entropy(head.s * cos, target)
        retain = self.retain_term(batch)
        return {"loss": forget + retain, "forget_loss": forget, "retain_loss": retain}
