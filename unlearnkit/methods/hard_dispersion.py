"""Hard dispersion: push each forget embedding away from its most similar same-identity embedding."""

from __future__ import annotations

import torch

from unlearnkit.methods.dispersion import Dispersion


class HardDispersion(Dispersion):
    """L_hard = mean over anchors i of max_{j ≠ i, y_j = y_i} cos(z_i, z_j) (anchors with a positive).

    Source: "Face Identity Unlearning for Retrieval via Embedding Dispersion"; sampling as ``dispersion``.
    """

    def dispersion(self, cos: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        hardest = cos.masked_fill(~same, float("-inf")).max(1).values
        return hardest[same.any(1)].mean()
