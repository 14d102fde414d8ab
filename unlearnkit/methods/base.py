"""``UnlearningMethod``, the one base class every unlearning method subclasses.

A method is one file: subclass ``UnlearningMethod``, declare what it needs (class attributes below), and
implement ``unlearning_loss(batch)``. θ0 is read through ``unlearnkit.checkpoints`` and kept frozen as
``self.teacher``, a ``unlearnkit.frozen.FrozenModel`` (its embeddings, logits and K-means); loss terms that
several methods use are in ``methods/losses.py``. ``FaceModule`` (``face_module.py``) is the LightningModule
every run shares; ``Pretrain`` and ``Retrain`` (``pretrain.py``) are also importable from here, so older configs
and checkpoints naming ``unlearnkit.methods.base.Pretrain`` still resolve.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.checkpoints import load_backbone_weights, read_weights
from unlearnkit.errors import CheckpointError, ConfigError
from unlearnkit.frozen import FrozenModel, identity_centroids
from unlearnkit.heads import CentroidHead
from unlearnkit.methods.face_module import FaceModule
from unlearnkit.methods.pretrain import Pretrain, Retrain
from unlearnkit.methods.search_space import SearchSpace

__all__ = ["FaceModule", "Pretrain", "Retrain", "UnlearningMethod"]

# an unlearning run's frozen teacher (and θ0's BatchNorm layers, freeze_bn) are in eval mode by design
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

ORIGINAL_MISSING = "give the path of the original model"


class UnlearningMethod(FaceModule):
    """Base of every unlearning method: starts from the original model θ0 and updates a copy.

    Class attributes a method sets (the defaults below; the demo, the study, the benchmarks and the data module
    read them, so a method is one file):
        needs_labels: reads identity labels (else label-free, like CURE).
        needs_teacher: keeps a frozen copy of θ0 as ``self.teacher``.
        batches: its ``BatchRecipe``: the data parts each step receives, the first one fixing the epoch length
            (``retain`` is added when a retain term is on), the P×K parts, one part per step.
        protocols: the forget protocols it supports.
        tuning: its ``SearchSpace``, what the study tunes (lr, its strength knob, its other loss weights).
        label_free_baseline: compared without labels (sample protocol) as its ``labels: pseudo`` variant.
        identity_study: runs in the study's identity protocol.
        demo_overrides: model options the demo sets for it.
        step_ratio_target: the most its training step may cost, as a multiple of a pretraining step on as many
            images (``benchmarks/step_overhead.py`` reports met / MISSED; None: timed without a verdict).

    Args:
        original: the original model: our Lightning checkpoint (backbone, head and architecture) or an
            insightface ``backbone.pth`` (then the head is initialised from identity centroids).
        labels: ``true`` (identity labels) or ``pseudo`` (K-means clusters of θ0's embeddings with a
            cosine-to-centroid head: the label-free variant of a supervised method).
        num_clusters: K for pseudo-labels (default round(sqrt(#training images))).
        retain_weight: λ_r of the optional retain term (0 = off) where a method has one.
        freeze_bn: keep θ0's BatchNorm statistics (BN layers in eval mode) while unlearning.
        min_steps: optimiser steps the run takes at least, whatever the forget set's size: an epoch over a small
            forget set draws its batches again (reshuffled) up to ``ceil(min_steps / max_epochs)`` steps. The
            default 15 is the schedule the methods' learning rates were chosen on (the demo's 3 forget batches
            per epoch × 5 epochs); 0 = one pass per epoch. Runs bounded by ``max_steps`` alone are left as they are.
    """

    # ---- declarations (defaults; a method overrides what differs: docs/architecture.md, "How to add a method") ----
    needs_labels: ClassVar[bool] = True
    needs_teacher: ClassVar[bool] = False
    batches: ClassVar[BatchRecipe] = BatchRecipe(parts=("forget",))
    protocols: ClassVar[tuple[str, ...]] = ("identity", "sample", "quality")
    tuning: ClassVar[SearchSpace] = SearchSpace()  # lr 2 decades below its default to 1 above, retain_weight 0-30
    label_free_baseline: ClassVar[bool] = False
    identity_study: ClassVar[bool] = True
    demo_overrides: ClassVar[Mapping[str, object]] = {}
    step_ratio_target: ClassVar[float | None] = 1.15

    def batch_recipe(self) -> BatchRecipe:
        """Adds the pseudo-labels P×K batches group by and the epoch's minimum length (``min_steps``)."""
        return replace(super().batch_recipe(), pk_groups=self.pk_group_labels(), min_batches=self.min_epoch_steps)
    # ---- end of declarations ----

    def __init__(self, original: str | None = None, labels: str = "true", num_clusters: int | None = None,
                 retain_weight: float = 0.0, freeze_bn: bool = True, lr: float = 0.01, scheduler: str = "constant",
                 min_steps: int = 15, **kwargs) -> None:
        if labels not in ("true", "pseudo"):
            raise ConfigError(f"labels must be 'true' or 'pseudo', got {labels!r}")
        if min_steps < 0:
            raise ConfigError(f"min_steps must be ≥ 0, got {min_steps}")
        if retain_weight < 0:
            raise ConfigError(f"retain_weight must be ≥ 0, got {retain_weight}")
        if num_clusters is not None and num_clusters < 2:
            raise ConfigError(f"num_clusters must be ≥ 2, got {num_clusters}")
        kwargs.update(read_weights(original, ORIGINAL_MISSING).architecture() if original else {})
        super().__init__(lr=lr, scheduler=scheduler, **kwargs)
        self.hparams.update(original=original, labels=labels, num_clusters=num_clusters,
                            retain_weight=retain_weight, freeze_bn=freeze_bn, min_steps=min_steps)
        self.teacher: FrozenModel | None = None  # θ0, frozen, counted into the cost ledger
        if self.uses_teacher:
            self.teacher = FrozenModel(copy.deepcopy(self.backbone), ledger=self.cost)
        self.pseudo_head: CentroidHead | None = None
        self._original_loaded = False

    # ------------------------------------------------------------- declarations
    @property
    def train_parts(self) -> tuple[str, ...]:
        if self.hparams.retain_weight > 0 and "retain" not in self.parts:
            return (*self.parts, "retain")
        return self.parts

    @property
    def min_epoch_steps(self) -> int:
        """Batches each training epoch takes at least (``min_steps`` over ``max_epochs``); 0 without an epoch bound."""
        epochs = self.trainer.max_epochs if self._trainer is not None else None
        if not self.hparams.get("min_steps") or not epochs or epochs < 1:
            return 0
        return math.ceil(self.hparams.min_steps / epochs) * self.trainer.accumulate_grad_batches

    @property
    def uses_teacher(self) -> bool:
        return self.needs_teacher or self.pseudo_labels

    @property
    def pseudo_labels(self) -> bool:
        return self.hparams.get("labels", "true") == "pseudo"

    @classmethod
    def check_protocol(cls, protocol: str, labels: str = "true") -> None:
        if protocol not in cls.protocols:
            raise ConfigError(f"method {cls.__name__} does not support the {protocol!r} forget protocol"
                              f" (supports: {', '.join(cls.protocols)})")
        if cls.needs_labels and labels == "true" and protocol != "identity":
            raise ConfigError(f"method {cls.__name__} needs identity labels, which the {protocol!r} protocol"
                              " hides: set model.labels: pseudo for its label-free variant")

    # ------------------------------------------------------------- the original model
    def load_original(self) -> None:
        """Load θ0 into the student (and teacher); the head too where the checkpoint has one."""
        if self._original_loaded or not self.hparams.original:
            return
        weights = read_weights(self.hparams.original, ORIGINAL_MISSING)
        load_backbone_weights(self.backbone, weights, strict=True)
        head_state = weights.head()
        if head_state:
            if self.head is None:
                self.build_head(head_state["weight"].shape[0])
            try:
                self.head.load_state_dict(head_state, strict=True)
            except RuntimeError as err:
                raise CheckpointError(f"head of {self.hparams.original} does not match: "
                                      f"{str(err).splitlines()[0]}") from err
        if self.teacher is not None:
            self.teacher.backbone.load_state_dict(self.backbone.state_dict())
        self._original_loaded = True

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        self.check_protocol(datamodule.hparams.protocol, self.hparams.labels)
        self.load_original()
        self.check_image_size(datamodule)
        if self.head is None:
            # an insightface backbone.pth has no head: start from θ0's identity centroids
            self.build_head(datamodule.num_classes, init=identity_centroids(self.backbone, datamodule, self.cost))
        if self.teacher is not None:
            # θ0's head rows, for teacher logits (not saved: θ0 is reloaded from ``original``)
            self.teacher.set_rows(self.head.class_rows(), self.hparams.scale)
        if stage == "fit" and self.pseudo_labels:
            self._build_pseudo_labels()

    def _build_pseudo_labels(self) -> None:
        """K-means on θ0's embeddings of the training images → a label per image and a centroid head."""
        centroids, table = self.teacher.cluster(self.trainer, "train", self.hparams.num_clusters)
        self.register_buffer("pseudo_table", table, persistent=False)
        self.pseudo_head = CentroidHead(centroids, s=self.hparams.scale, m=self.hparams.margin)

    # ------------------------------------------------------------- helpers methods use
    def labels_of(self, data: dict) -> torch.Tensor:
        """Identity labels, or cluster labels in the label-free variant."""
        if self.pseudo_labels:
            return self.pseudo_table[data["index"]]
        return data["label"]

    def pk_group_labels(self) -> np.ndarray | None:
        """What P×K batches are grouped by, as a label per source index: the pseudo-labels in the label-free
        variant (which must never see identities), ``None`` (the identities) otherwise."""
        return self.pseudo_table.cpu().numpy() if self.pseudo_labels else None

    @property
    def active_head(self) -> nn.Module:
        return self.pseudo_head if self.pseudo_labels else self.head

    @property
    def num_labels(self) -> int:
        return self.active_head.num_classes

    def margin_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.active_head.loss(z, labels)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits without margin (for KL between models)."""
        return self.active_head.logits(z)

    def teacher_embed(self, images: torch.Tensor) -> torch.Tensor:
        """θ0's normalised embeddings of ``images`` (``self.teacher.embed``: no gradients, counted)."""
        return self.teacher.embed(images)

    def teacher_logits(self, z_teacher: torch.Tensor) -> torch.Tensor:
        """θ0's scaled cosine logits for teacher embeddings, in this run's label space: θ0's head rows, or the
        cluster centroids in the label-free variant."""
        if self.pseudo_labels:
            return self.pseudo_head.logits(z_teacher)
        return self.teacher.logits(z_teacher)

    def retain_term(self, batch: dict) -> torch.Tensor:
        """λ_r · margin loss on a retain batch (NegGrad+ style), 0 when off or no retain batch is drawn."""
        if self.hparams.retain_weight == 0 or "retain" not in batch:
            return torch.zeros((), device=self.device)
        data = batch["retain"]
        return self.hparams.retain_weight * self.margin_loss(self.embed(data["image"]), self.labels_of(data))

    def compute_loss(self, batch: dict):
        return self.unlearning_loss(batch)

    def unlearning_loss(self, batch: dict[str, dict]) -> torch.Tensor | dict[str, torch.Tensor]:
        """The method's loss on ``batch`` = {part: {image, label, index}}; return a tensor or a dict with 'loss'."""
        raise NotImplementedError

    def on_train_start(self) -> None:
        self.freeze_modes()  # a run resumed mid-epoch gets no on_train_epoch_start (Lightning skips it)

    def on_train_epoch_start(self) -> None:
        self.freeze_modes()

    def freeze_modes(self) -> None:
        """With ``freeze_bn``, the student's BatchNorm layers in eval mode while training (a ``FrozenModel``, the
        teacher, stays in eval mode by itself)."""
        if self.hparams.get("freeze_bn", True):
            # forget batches are small and one-sided: their statistics would shift every embedding
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
