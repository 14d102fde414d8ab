"""Random labeling (RL): train D_f towards labels drawn uniformly from the other classes."""

from __future__ import annotations

from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import other_labels


class RandomLabel(UnlearningMethod):
    """Margin loss on (x_f, ỹ) with ỹ uniform over classes ≠ y, plus the optional retain term.

    Source: Graves et al., "Amnesiac Machine Learning" (AAAI 2021). A fresh label is drawn every step.
    """

    label_free_baseline = True

    def __init__(self, lr: float = 1e-4, **kwargs) -> None:
        # lr: a one-seed probe on the synthetic set: UES 0.51 at 1e-4, 0.34 at 3e-4, collapse at 1e-3
        super().__init__(lr=lr, **kwargs)

    def unlearning_loss(self, batch):
        data = batch["forget"]
        labels = self.labels_of(data)
        forget = self.margin_loss(self.embed(data["image"]), other_labels(labels, self.num_labels))
        retain = self.retain_term(batch)
        return {"loss": forget + retain, "forget_loss": forget, "retain_loss": retain}
