"""SCRUB: a student that stays close to θ0 on D_r and moves away from it on D_f."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnkit.methods.base import METHODS, UnlearningMethod


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float):
    """KL(teacher ‖ student) on temperature-softened head outputs, ×T² as in distillation."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    log_target=True, reduction="batchmean") * t * t


@METHODS.register("scrub")
class Scrub(UnlearningMethod):
    """Alternating steps: max-steps maximise KL(θ0 ‖ θ) on D_f, min-steps minimise
    α·KL(θ0 ‖ θ) + γ·margin loss on D_r.

    Source: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023). Ours: the two kinds of
    steps alternate step by step (even steps max, odd steps min) during the first ``max_epochs`` epochs, and
    only min-steps follow; the task loss is the face margin loss.

    Args:
        temperature: distillation temperature T.
        max_epochs: epochs during which max-steps happen (SCRUB's msteps).
        alpha: weight of the retain KL; gamma: weight of the retain margin loss; forget_weight: of the max KL.
    """

    parts = ("forget", "retain")
    needs_teacher = True

    def __init__(self, temperature: float = 4.0, max_epochs: int = 2, alpha: float = 1.0, gamma: float = 1.0,
                 forget_weight: float = 1.0, lr: float = 5e-3, **kwargs) -> None:
        super().__init__(lr=lr, **kwargs)

    def unlearning_loss(self, batch):
        hp = self.hparams
        max_step = self.current_epoch < hp.max_epochs and self.global_step % 2 == 0
        part = "forget" if max_step else "retain"
        data = batch[part]
        z = self.embed(data["image"])
        kl = kl_teacher_student(self.logits(z), self.teacher_logits(self.teacher_embed(data["image"])),
                                hp.temperature)
        if max_step:
            return {"loss": -hp.forget_weight * kl, "forget_kl": kl}
        task = self.margin_loss(z, self.labels_of(data))
        return {"loss": hp.alpha * kl + hp.gamma * task, "retain_kl": kl, "retain_loss": task}
