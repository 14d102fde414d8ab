"""CURE with a bounded forget target and a similarity-structure retain term: OUR variant, not the paper's method."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.errors import ConfigError
from unlearnkit.frozen import embed_indices
from unlearnkit.methods.base import UnlearningMethod
from unlearnkit.methods.losses import cosine_to_teacher
from unlearnkit.methods.search_space import Knob, LogUniform, SearchSpace
from unlearnkit.metrics import search


class CureBounded(UnlearningMethod):
    """Ours (not in the CURE paper): make forgotten images look like unseen images of their cluster, and stop there.

    Label-free like CURE (SPEC §2): θ0 is the frozen teacher, K-means on θ0's *retain* embeddings gives
    centroids c_k. What each change addresses, from the measurements of SPEC's CURE (docs/results_notes.md):

    - **Bounded forget target.** CURE's InfoNCE pulls every forgotten image toward the farthest forget centroid
      without limit, although the retrain oracle keeps recognising those images (they are images of people who
      stay). Here a forgotten image x is pushed off its own cluster's centroid c(x) (the nearest, under θ0) only
      until it sits where the least central retain images of that cluster sit under θ0:
      ``L_f = mean_x relu(cos(f_θ(x), c(x)) − t_c(x))``, t_k the ``target_quantile`` of θ0's cosines of cluster
      k's retain images to c_k (default 0: the least central one). Its gradient is not zero at θ0 (CURE's L_cos
      is), so it starts the forgetting.
    - **Rotation-invariant retain term.** CURE's retain InfoNCE uses fewer clusters than people, so it pulls
      different people together, and its pointwise terms have zero gradient at θ0. Similarity-structure
      distillation keeps each retain batch's cosine matrix equal to θ0's, whatever rotation the embedding
      takes: ``L_s = mean_{i≠j} (f_θ(x_i)·f_θ(x_j) − f_θ0(x_i)·f_θ0(x_j))²``; ``lambda_fm`` weighs CURE's
      pointwise ``1 − cos(f_θ(x), f_θ0(x))``, which holds the centroids' frame; at 30 (not CURE's 1) it lets the
      forget term move further before held-out retain images move with it.
    - **Balanced gradient scales and smaller steps.** Every term is a plain cosine (no 1/T = 10× InfoNCE
      factor, which gave the forget pull about 30× the retain term's gradient); AdamW at lr 1e-3 (CURE: SGD at
      5e-3, which collapses the embedding of a small generated set). The defaults were chosen on two generated
      sets other than the tests' (sample protocol, 5 epochs): of the settings that kept held-out retain mAP within
      2 points of θ0's on both, the one closest to the retrain oracle on average.

    Identity labels are never read. Args:
        retain_clusters: K of the retain clustering (default round(sqrt(|D_r|))).
        target_quantile: where in its cluster a forgotten image may stop (0 = the least central retain image,
            0.5 = the median one): lower forgets more.
        lambda_forget, lambda_structure, lambda_fm: weights of L_f, L_s and the pointwise term.
    """

    step_ratio_target = 1.6  # θ0 embeds every batch too
    batches = BatchRecipe(parts=("forget", "retain"))
    tuning = SearchSpace(lr=LogUniform(1e-5, 1e-2), strength=Knob("lambda_fm", (30.0, 10.0, 100.0)),
                         weights=(Knob("target_quantile", (0.0, 0.1, 0.25)), Knob("lambda_structure", (1.0, 10.0, 30.0))))
    identity_study = False  # a sample-protocol method: it forgets images of people who stay
    needs_teacher = True
    needs_labels = False

    def __init__(self, retain_clusters: int | None = None, target_quantile: float = 0.0, lambda_forget: float = 1.0,
                 lambda_structure: float = 1.0, lambda_fm: float = 30.0, optimizer: str = "adamw", lr: float = 1e-3,
                 **kwargs) -> None:
        if not 0 <= target_quantile <= 1:
            raise ConfigError(f"target_quantile must be in [0, 1], got {target_quantile}")
        if retain_clusters is not None and retain_clusters < 2:
            raise ConfigError(f"retain_clusters must be ≥ 2, got {retain_clusters}")
        if min(lambda_forget, lambda_structure, lambda_fm) < 0:
            raise ConfigError("lambda_forget, lambda_structure and lambda_fm must be ≥ 0")
        super().__init__(optimizer=optimizer, lr=lr, **kwargs)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.centroids, self.targets = self.retain_targets()

    def retain_targets(self) -> tuple[torch.Tensor, torch.Tensor]:
        """θ0's retain centroids and each cluster's target cosine, computed on rank 0 and broadcast."""
        trainer, dm = self.trainer, self.trainer.datamodule
        indices = dm.part_indices("retain")
        k = self.hparams.retain_clusters or max(2, round(np.sqrt(len(indices))))
        if k > len(indices):
            raise ConfigError(f"CureBounded needs retain_clusters ≤ |D_r|: {k} clusters for {len(indices)} images")
        result = None
        if trainer.global_rank == 0:
            z = embed_indices(self.teacher.backbone, dm, indices, self.cost).cpu()
            centroids, assign = search.kmeans(z, k, seed=dm.hparams.seed)
            centroids = F.normalize(centroids.float(), dim=1)
            cosines = (z * centroids[assign]).sum(1)
            # a cluster K-means left empty gets target 1: a forgotten image assigned to it is not pushed
            targets = torch.stack([torch.quantile(cosines[assign == c], self.hparams.target_quantile)
                                   if (assign == c).any() else torch.tensor(1.0) for c in range(k)])
            result = (centroids, targets)
        if trainer.world_size > 1:
            result = trainer.strategy.broadcast(result, src=0)
        return result[0].to(self.device), result[1].to(self.device)

    def unlearning_loss(self, batch):
        hp = self.hparams
        forget, retain = batch["forget"]["image"], batch["retain"]["image"]
        n_f = forget.shape[0]
        images = torch.cat([forget, retain])
        teacher, student = self.teacher_embed(images), self.embed(images)
        s_f, s_r, t_f, t_r = student[:n_f], student[n_f:], teacher[:n_f], teacher[n_f:]

        own = (t_f @ self.centroids.T).argmax(1)  # each forgotten image's cluster under θ0
        l_forget = F.relu((s_f * self.centroids[own]).sum(1) - self.targets[own]).mean()
        off_diagonal = ~torch.eye(len(s_r), dtype=torch.bool, device=s_r.device)
        l_structure = (s_r @ s_r.T - t_r @ t_r.T)[off_diagonal].pow(2).mean() if len(s_r) > 1 else s_r.sum() * 0
        l_fm = (1 - cosine_to_teacher(s_r, t_r)).mean()
        loss = hp.lambda_forget * l_forget + hp.lambda_structure * l_structure + hp.lambda_fm * l_fm
        return {"loss": loss, "forget": l_forget, "structure": l_structure, "fm": l_fm}
