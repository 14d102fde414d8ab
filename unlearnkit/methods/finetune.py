"""Fine-tuning (FT): the margin loss on D_r, starting from θ0 — forgetting only by catastrophic drift."""

from __future__ import annotations

from unlearnkit.methods.base import METHODS, UnlearningMethod


@METHODS.register("finetune")
class Finetune(UnlearningMethod):
    """Margin loss on retain batches. Baseline of Golatkar et al. (CVPR 2020) and most unlearning papers."""

    parts = ("retain",)

    def unlearning_loss(self, batch):
        data = batch["retain"]
        return self.margin_loss(self.embed(data["image"]), self.labels_of(data))
