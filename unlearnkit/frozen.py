"""θ0 as a component: a face model that is read, never trained.

``FrozenModel`` is a frozen backbone (always in eval mode, no gradients) with optional class rows: θ0 as an
unlearning method's teacher, bad teacher's incompetent teacher, θ0 and the retrain oracle of the evaluation, and
the model that scores image quality for the quality protocol are instances. It embeds images and data parts,
gives logits against its rows, clusters a data part (K-means once on rank 0, broadcast to every rank) and
counts its forward passes into the run's cost ledger.

The functions below do the same for any backbone (CURE re-clusters the student; an insightface θ0's head
starts from the student's identity centroids).
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.backbones import create_backbone
from unlearnkit.checkpoints import freeze, load_backbone_weights, read_weights
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import search
from unlearnkit.utils.modes import eval_mode

LEDGER_KEY = "teacher_forward_images"  # the cost ledger's count of images through a model without gradients


def _count(ledger: dict | None, n: int) -> None:
    if ledger is not None:
        ledger[LEDGER_KEY] += n


@torch.no_grad()
def embed_indices(model: nn.Module, datamodule, indices, ledger: dict | None = None) -> torch.Tensor:
    """Normalised embeddings of source ``indices`` (every rank computes all of them, in order).

    They are computed on the model's own device: in ``setup`` Lightning already reports the GPU as the
    module's device while the modules are still on the CPU. Eval mode restores each submodule's own mode
    afterwards, so a student's frozen BatchNorm stays frozen.
    """
    device = next(model.parameters()).device
    out = []
    with eval_mode(model):
        for batch in datamodule.eval_loader(indices, shard=False):
            out.append(F.normalize(model(batch["image"].to(device)).float(), dim=1))
    _count(ledger, len(indices))
    return torch.cat(out) if out else torch.empty(0, model.embedding_size, device=device)


def identity_centroids(model: nn.Module, datamodule, ledger: dict | None = None) -> torch.Tensor:
    """Normalised mean embedding of each identity's training images (a head for weights that come without one)."""
    indices = datamodule.part_indices("train")
    z = embed_indices(model, datamodule, indices, ledger)
    labels = torch.as_tensor(datamodule.labels[indices], device=z.device)
    centroids = torch.zeros(datamodule.num_classes, z.shape[1], device=z.device).index_add_(0, labels, z)
    return F.normalize(centroids, dim=1).cpu()


def cluster_part(model: nn.Module, trainer, part: str, k: int | None, who: str = "pseudo-labels",
                 ledger: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means on ``model``'s embeddings of a data part, computed once on rank 0 and broadcast to every rank.

    Returns normalised centroids and a table source index → cluster (−1 outside the part), on the model's
    device; K defaults to round(sqrt(|part|)).
    """
    dm = trainer.datamodule
    indices = dm.part_indices(part)
    k = k or max(2, round(np.sqrt(len(indices))))
    if k > len(indices):
        raise ConfigError(f"{who} needs K ≤ |D_{part[0]}|: {k} clusters for {len(indices)} {part} images")
    result = None
    if trainer.global_rank == 0:
        centroids, assign = search.kmeans(embed_indices(model, dm, indices, ledger).cpu(), k, seed=dm.hparams.seed)
        table = torch.full((len(dm.source),), -1, dtype=torch.long)
        table[torch.as_tensor(indices)] = assign.long()
        result = (F.normalize(centroids.float(), dim=1), table)
    if trainer.world_size > 1:
        result = trainer.strategy.broadcast(result, src=0)
    centroids, table = result
    device = next(model.parameters()).device
    return centroids.to(device), table.to(device)


class FrozenModel(nn.Module):
    """A frozen face model: a backbone in eval mode without gradients, and optional class rows.

    Args:
        backbone: the network (frozen here).
        rows: class rows for ``logits`` (normalised here); set later with ``set_rows``.
        scale: the logits' multiplier s.
        ledger: the run's cost ledger (a dict), which counts every image this model embeds; ``None``: not counted.

    ``train()`` keeps it in eval mode (a parent module's ``train()`` reaches it too), and its state dict is the
    backbone's own (no ``backbone.`` prefix): a method's checkpoint keeps θ0 under ``teacher.…`` as before.
    """

    def __init__(self, backbone: nn.Module, rows: torch.Tensor | None = None, scale: float = 1.0,
                 ledger: dict | None = None) -> None:
        super().__init__()
        self.backbone = freeze(backbone)
        self.embedding_size = backbone.embedding_size
        self.ledger = ledger
        self.scale = scale
        self.register_buffer("rows", None, persistent=False)
        if rows is not None:
            self.set_rows(rows, scale)
        self.register_state_dict_post_hook(_without_prefix)
        self.register_load_state_dict_pre_hook(_with_prefix)

    def train(self, mode: bool = True) -> FrozenModel:
        return super().train(False)

    def set_rows(self, rows: torch.Tensor, scale: float | None = None) -> None:
        """Class rows (normalised, frozen) for ``logits``, and optionally a new scale."""
        self.rows = F.normalize(rows.detach().float(), dim=1).to(next(self.backbone.parameters()).device)
        self.scale = self.scale if scale is None else scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The backbone's raw output (not normalised, not counted): gradients reach the input (FGSM)."""
        return self.backbone(images)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, counted into the ledger."""
        _count(self.ledger, images.shape[0])
        return F.normalize(self.backbone(images).float(), dim=1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits of normalised embeddings ``z`` against the class rows."""
        if self.rows is None:
            raise RuntimeError("this frozen model has no class rows: call set_rows first")
        return self.scale * z @ self.rows.T

    def embed_indices(self, datamodule, indices) -> torch.Tensor:
        return embed_indices(self.backbone, datamodule, indices, self.ledger)

    def identity_centroids(self, datamodule) -> torch.Tensor:
        return identity_centroids(self.backbone, datamodule, self.ledger)

    def cluster(self, trainer, part: str, k: int | None, who: str = "pseudo-labels"):
        """K-means on this model's embeddings of ``part`` (see ``cluster_part``)."""
        return cluster_part(self.backbone, trainer, part, k, who, self.ledger)


def _without_prefix(module, state_dict, prefix, local_metadata) -> None:
    for key in [k for k in state_dict if k.startswith(f"{prefix}backbone.")]:
        state_dict[prefix + key[len(f"{prefix}backbone."):]] = state_dict.pop(key)


def _with_prefix(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                 error_msgs) -> None:
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(f"{prefix}backbone.")]:
        state_dict[f"{prefix}backbone.{key[len(prefix):]}"] = state_dict.pop(key)


def load_frozen(checkpoint: str | os.PathLike, backbone: str | None = None, embedding_size: int | None = None,
                image_size: int | None = None, missing: str | None = None) -> FrozenModel:
    """A frozen model from a weights file: built as the file records (our checkpoints), else as given, with the
    file's head rows where it has one (scaled by its recorded ``scale``)."""
    weights = read_weights(checkpoint, **({"missing": missing} if missing else {}))
    arch = {"backbone": backbone, "embedding_size": embedding_size, "image_size": image_size,
            **weights.architecture()}
    kwargs = {k: arch[k] for k in ("embedding_size", "image_size") if arch.get(k) is not None}
    model = create_backbone(arch["backbone"] or "timm_resnet10t", **kwargs)
    load_backbone_weights(model, weights, strict=True)
    head = weights.head()
    return FrozenModel(model, head.get("weight"), float(arch.get("scale") or 1.0))
