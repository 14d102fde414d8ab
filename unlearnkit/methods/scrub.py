"""SCRUB: a student that stays close to θ0 on D_r and moves away from it on D_f."""

from __future__ import annotations

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.errors import ConfigError
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import distillation_kl
from unlearnkit.methods.search_space import Knob, SearchSpace

ALTERNATIONS = ("pass", "step")


class Scrub(UnlearningMethod):
    """Max-steps maximise KL(θ0 ‖ θ) on D_f, min-steps minimise α·KL(θ0 ‖ θ) + γ·margin loss on D_r.

    Source: Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023) and its code
    (``meghdadk/SCRUB``). ``alternation: pass`` (default, the published one): each of the first ``max_epochs``
    SCRUB epochs is a full max-pass over D_f followed by a full min-pass over D_r, later epochs are min-passes
    only. Each pass is one trainer epoch (the training loader is rebuilt for every pass), so the first
    ``2 · max_epochs`` trainer epochs alternate max and min passes and ``trainer.max_epochs`` counts passes:
    SCRUB with E epochs and msteps = M is ``trainer.max_epochs = E + M``. ``alternation: step`` (before
    issue 15): every step gets a forget and a retain batch, max- and min-steps alternate step by step during
    the first ``max_epochs`` trainer epochs (half the batches unused), min-steps only afterwards. Ours: the
    task loss is the face margin loss.

    Args:
        temperature: distillation temperature T.
        max_epochs: SCRUB epochs that have a max-pass (SCRUB's msteps).
        alpha: weight of the retain KL; gamma: weight of the retain margin loss; forget_weight: of the max KL.
        alternation: ``pass`` (published) or ``step``.
        min_steps: 0 by default (the base class's 15 would repeat each pass): SCRUB's passes are whole passes,
            its steps set by ``max_epochs`` and ``trainer.max_epochs``.
    """

    step_ratio_target = 1.6  # θ0's logits on every batch
    batches = BatchRecipe(parts=("forget", "retain"), one_part_per_step=True)
    tuning = SearchSpace(strength=Knob("forget_weight", (1.0, 2.0)), epochs=(5, 4, 8))  # passes: 4 = msteps 2 alone
    label_free_baseline = True
    needs_teacher = True

    def __init__(self, temperature: float = 4.0, max_epochs: int = 2, alpha: float = 1.0, gamma: float = 1.0,
                 forget_weight: float = 1.0, alternation: str = "pass", lr: float = 5e-3, min_steps: int = 0,
                 **kwargs) -> None:
        if alternation not in ALTERNATIONS:
            raise ConfigError(f"SCRUB alternation must be 'pass' or 'step', got {alternation!r}")
        if max_epochs < 0:
            raise ConfigError(f"SCRUB max_epochs (msteps) must be ≥ 0, got {max_epochs}")
        super().__init__(lr=lr, min_steps=min_steps, **kwargs)

    def max_pass(self, epoch: int) -> bool:
        """Whether trainer epoch ``epoch`` is a max-pass over D_f (``alternation: pass``)."""
        return epoch < 2 * self.hparams.max_epochs and epoch % 2 == 0

    @property
    def train_parts(self) -> tuple[str, ...]:
        """Both parts (``step``), or the one part of the coming pass, asked for while training (``pass``);
        afterwards, the last pass's part."""
        if self.hparams.alternation == "step":
            return self.parts
        trainer = self._trainer
        if trainer is not None and trainer.training:
            self._pass_part = "forget" if self.max_pass(trainer.current_epoch) else "retain"
        return (getattr(self, "_pass_part", None) or ("forget" if self.max_pass(0) else "retain"),)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit" and self.hparams.alternation == "pass":
            # one pass per trainer epoch, over D_f or D_r: the training loader follows ``train_parts``
            self.trainer.reload_dataloaders_every_n_epochs = 1

    def unlearning_loss(self, batch):
        hp = self.hparams
        if hp.alternation == "pass":
            max_step = "forget" in batch
        else:
            max_step = self.current_epoch < hp.max_epochs and self.global_step % 2 == 0
        data = batch["forget" if max_step else "retain"]
        z = self.embed(data["image"])
        kl = distillation_kl(self.logits(z), self.teacher_logits(self.teacher_embed(data["image"])),
                                hp.temperature)
        if max_step:
            return {"loss": -hp.forget_weight * kl, "forget_kl": kl}
        task = self.margin_loss(z, self.labels_of(data))
        return {"loss": hp.alpha * kl + hp.gamma * task, "retain_kl": kl, "retain_loss": task}
