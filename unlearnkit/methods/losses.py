"""Loss terms more than one method uses: methods import them from here, never from each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher ‖ student) on temperature-softened head outputs, ×T² as in distillation (SCRUB, bad teacher)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    log_target=True, reduction="batchmean") * t * t


def other_labels(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """A label drawn uniformly from the classes other than each one's own (random labeling, SalUn); fresh each call."""
    other = torch.randint(0, num_labels - 1, labels.shape, device=labels.device)
    return other + (other >= labels).long()


def cosine_to_teacher(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine between normalised student and teacher embeddings of the same images."""
    return (student * teacher).sum(1)


def feature_distribution_gap(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """‖μ_s − μ_t‖² + ‖Σ_s − Σ_t‖_F² over a batch (unbiased covariances)."""
    mu_s, mu_t = student.mean(0), teacher.mean(0)
    cov_s = (student - mu_s).T @ (student - mu_s) / max(1, student.shape[0] - 1)
    cov_t = (teacher - mu_t).T @ (teacher - mu_t) / max(1, teacher.shape[0] - 1)
    return (mu_s - mu_t).pow(2).sum() + (cov_s - cov_t).pow(2).sum()


def positive_cosines(z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine matrix of normalised ``z`` and the mask of same-label pairs i ≠ j (the dispersion losses)."""
    cos = z @ z.T
    same = labels[:, None] == labels[None, :]
    same.fill_diagonal_(False)
    return cos, same


def farthest_centroid(centroids: torch.Tensor) -> torch.Tensor:
    """For each centroid k, argmax_k' ‖c_k − c_k'‖²: the pseudo-label of the samples of cluster k (CURE)."""
    return torch.cdist(centroids, centroids).argmax(1)
