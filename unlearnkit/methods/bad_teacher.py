"""Bad teacher: match θ0 on D_r and a randomly initialised ("incompetent") teacher on D_f."""

from __future__ import annotations

import torch

from unlearnkit.backbones import create_backbone
from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.errors import ConfigError
from unlearnkit.frozen import FrozenModel
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import distillation_kl
from unlearnkit.methods.search_space import Knob, SearchSpace


class BadTeacher(UnlearningMethod):
    """KL(θ0 ‖ θ) on retain batches + KL(incompetent ‖ θ) on forget batches, on head outputs.

    Source: Chundawat et al., "Can Bad Teaching Induce Forgetting?" (AAAI 2023): the incompetent teacher is a
    randomly initialised network, whose softmax is close to uniform, and the KL temperature is 1 (their code's
    ``KL_temperature``). Ours: the incompetent teacher is a freshly initialised backbone (seeded by
    ``bad_seed``) with random unit head rows, its logits the plain cosines (``incompetent_scale`` = 1), so its
    softmax is close to uniform over the K classes; scaling them by the margin head's s (30), as before
    issue 15, made it nearly one-hot (a random backbone's embeddings are almost parallel, so every forget image
    got the same class). Each sample goes through exactly one teacher.

    Args:
        temperature: KL temperature; bad_seed: seed of the incompetent teacher.
        incompetent_scale: multiplier of the incompetent teacher's cosine logits (None: the head's scale s).
    """

    step_ratio_target = 1.6  # two teachers' logits on every batch
    batches = BatchRecipe(parts=("forget", "retain"))
    tuning = SearchSpace(strength=Knob("temperature", (1.0, 4.0)))
    label_free_baseline = True
    needs_teacher = True
    needs_labels = False  # only head outputs are matched

    def __init__(self, temperature: float = 1.0, bad_seed: int = 0, incompetent_scale: float | None = 1.0,
                 lr: float = 1e-3, **kwargs) -> None:
        # lr: a one-seed probe on the synthetic set: UES 0.50 at 1e-3, collapse (CS 1.0) at 5e-3
        if incompetent_scale is not None and incompetent_scale <= 0:
            raise ConfigError(f"incompetent_scale must be positive (or null for the head's s), got {incompetent_scale}")
        super().__init__(lr=lr, **kwargs)
        hp = self.hparams
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(bad_seed)
            backbone = create_backbone(hp.backbone, embedding_size=hp.embedding_size, image_size=hp.image_size)
        scale = hp.scale if incompetent_scale is None else incompetent_scale
        self.incompetent = FrozenModel(backbone, scale=scale, ledger=self.cost)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        generator = torch.Generator().manual_seed(self.hparams.bad_seed)  # random head rows, one per label
        self.incompetent.set_rows(torch.randn(self.num_labels, self.hparams.embedding_size, generator=generator))

    @torch.no_grad()
    def incompetent_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The incompetent teacher's logits: cosines to random head rows, × ``incompetent_scale``."""
        return self.incompetent.logits(self.incompetent.embed(images))

    def unlearning_loss(self, batch):
        t = self.hparams.temperature
        forget, retain = batch["forget"], batch["retain"]
        bad_logits = self.incompetent_logits(forget["image"])
        with torch.no_grad():
            good_logits = self.teacher_logits(self.teacher_embed(retain["image"]))
        z = self.embed(torch.cat([forget["image"], retain["image"]]))
        z_f, z_r = z[: forget["image"].shape[0]], z[forget["image"].shape[0]:]
        loss_f = distillation_kl(self.logits(z_f), bad_logits, t)
        loss_r = distillation_kl(self.logits(z_r), good_logits, t)
        return {"loss": loss_f + loss_r, "forget_kl": loss_f, "retain_kl": loss_r}
