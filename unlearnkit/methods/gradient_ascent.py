"""Gradient ascent (GA / NegGrad): maximise the margin loss on D_f; NegGrad+ adds a retain term."""

from __future__ import annotations

from unlearnkit.methods.base import UnlearningMethod


class GradientAscent(UnlearningMethod):
    """−(margin loss on D_f) + λ_r · margin loss on D_r (``retain_weight``; 0 = plain NegGrad).

    Source: NegGrad as in Golatkar et al. (2020) / Kurmanji et al. (SCRUB, 2023, "NegGrad+").
    Ours: the loss is the face margin loss (CosFace by default), not softmax cross-entropy.
    """

    label_free_baseline = True

    def __init__(self, lr: float = 2e-3, **kwargs) -> None:
        # lr: a one-seed probe on the synthetic set left θ0 unchanged at 1e-3 and collapsed it at 5e-3
        super().__init__(lr=lr, **kwargs)

    def unlearning_loss(self, batch):
        data = batch["forget"]
        forget = self.margin_loss(self.embed(data["image"]), self.labels_of(data))
        retain = self.retain_term(batch)
        return {"loss": -forget + retain, "forget_loss": forget, "retain_loss": retain}
