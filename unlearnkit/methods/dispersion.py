"""Embedding dispersion: push same-identity forget embeddings apart on the hypersphere."""

from __future__ import annotations

import torch

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import cosine_to_teacher, positive_cosines


class Dispersion(UnlearningMethod):
    """L_disp = mean over same-identity pairs (i ≠ j) of a forget batch of cos(z_i, z_j), on P×K batches.

    Optional retain term λ_r · (1 − cos(f_θ(x_r), f_θ0(x_r))) (``retain_weight``; needs the teacher).
    Source: "Face Identity Unlearning for Retrieval via Embedding Dispersion". Ours: P×K sampling sizes
    (``data.pk_identities`` × ``data.pk_images``) and the retain term's form are SPEC defaults.
    """

    batches = BatchRecipe(parts=("forget",), pk_parts=("forget",))
    protocols = ("identity", "sample", "quality")

    @property
    def uses_teacher(self) -> bool:
        return self.hparams.retain_weight > 0 or self.pseudo_labels

    def dispersion(self, cos: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return cos[same].mean()

    def retain_term(self, batch: dict) -> torch.Tensor:
        if self.hparams.retain_weight == 0:
            return torch.zeros((), device=self.device)
        images = batch["retain"]["image"]
        cos = cosine_to_teacher(self.embed(images), self.teacher_embed(images))
        return self.hparams.retain_weight * (1 - cos).mean()

    def unlearning_loss(self, batch):
        data = batch["forget"]
        cos, same = positive_cosines(self.embed(data["image"]), self.labels_of(data))
        if not same.any():
            raise ValueError("a forget batch has no same-identity pair: use P×K batches with pk_images ≥ 2")
        forget = self.dispersion(cos, same)
        retain = self.retain_term(batch)
        return {"loss": forget + retain, "dispersion": forget, "retain_loss": retain}
