"""The shared LightningModules: ``FaceModule`` (a backbone + margin head, its optimiser, evaluation outputs and
cost ledger) and ``UnlearningMethod``, the one base class every unlearning method subclasses.

A method is one file: subclass ``UnlearningMethod``, declare what it needs (class attributes below), and
implement ``unlearning_loss(batch)``. Loading the original model, the frozen teacher, pseudo-labels,
optimisers, evaluation, logging and checkpointing all live here or in callbacks.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.backbones import create_backbone, load_backbone_weights
from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.errors import CheckpointError, ConfigError
from unlearnkit.heads import CentroidHead, create_head
from unlearnkit.methods.search_space import SearchSpace
from unlearnkit.utils.modes import eval_mode
from unlearnkit.utils.safe_pickle import weights_only_refusal

# an unlearning run's frozen teacher (and θ0's BatchNorm layers, freeze_bn) are in eval mode by design
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

ARCH_KEYS = ("backbone", "embedding_size", "image_size", "head", "scale", "margin", "num_classes")


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for teachers."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class FaceModule(L.LightningModule):
    """Backbone + margin head with the optimiser, evaluation and cost accounting every run shares.

    Args:
        backbone: a registered backbone (``timm_resnet10t``, ``iresnet50``, ...) or any timm model name.
        embedding_size: embedding dimension d.
        image_size: input side in pixels.
        head: margin head, ``cosface`` or ``arcface``; ``scale`` (s) and ``margin`` (m) its options.
        num_classes: identities of the head; taken from the data module when not given.
        optimizer: ``sgd`` or ``adamw``; lr, momentum, weight_decay as usual.
        scheduler: ``cosine`` (to 0 over max_epochs), ``step`` (×0.1 at 60 % and 85 %) or ``constant``.
        warmup_epochs: linear warm-up before the schedule.
        flip_pairs: embed verification images as emb(x) + emb(flip x), as insightface does.
        compile: ``torch.compile`` the backbone (in place, so checkpoints keep their keys) when the run starts.
    """

    # ---- declarations: what a module states about itself (docs/architecture.md, "How to add a method") ----
    batches: ClassVar[BatchRecipe] = BatchRecipe(parts=("train",))  # the shape of its batches (the data contract)
    needs_labels: ClassVar[bool] = True

    @property
    def parts(self) -> tuple[str, ...]:
        return self.batches.parts

    @property
    def pk_parts(self) -> tuple[str, ...]:
        return self.batches.pk_parts

    def batch_recipe(self) -> BatchRecipe:
        """What the data module serves this epoch: ``batches`` with this run's parts (``train_parts``)."""
        return replace(self.batches, parts=self.train_parts)
    # ---- end of declarations ----

    def __init__(
        self,
        backbone: str = "timm_resnet10t",
        embedding_size: int = 128,
        image_size: int = 48,
        head: str = "cosface",
        scale: float = 32.0,
        margin: float = 0.35,
        num_classes: int | None = None,
        optimizer: str = "sgd",
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",
        warmup_epochs: float = 0.0,
        flip_pairs: bool = True,
        compile: bool = False,
    ) -> None:
        super().__init__()
        actual = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if lr <= 0:
            raise ConfigError(f"lr must be positive, got {lr}: set model.lr to e.g. 0.01")
        if optimizer not in ("sgd", "adamw"):
            raise ConfigError(f"unknown optimizer {optimizer!r}: choose sgd or adamw")
        if scheduler not in ("cosine", "step", "constant"):
            raise ConfigError(f"unknown scheduler {scheduler!r}: choose cosine, step or constant")
        self.save_hyperparameters()
        # under LightningCLI hparams come from the config; record what was actually built (e.g. θ0's arch)
        self.hparams.update(actual)
        self._hparams_initial = copy.deepcopy(self._hparams)  # Lightning logs (and checks) these: what was built
        self.backbone = create_backbone(backbone, embedding_size=embedding_size, image_size=image_size)
        self.head: nn.Module | None = None
        if num_classes:
            self.build_head(num_classes)
        self.cost = {"forward_images": 0, "backward_images": 0, "teacher_forward_images": 0}
        self._fit_started: float | None = None
        self._wall_before = 0.0  # seconds spent before a resume (from the checkpoint)

    @property
    def train_parts(self) -> tuple[str, ...]:
        """Data parts each training step receives, as ``{part: batch}``; the first fixes the epoch length."""
        return self.parts

    # ------------------------------------------------------------- model pieces
    def build_head(self, num_classes: int, init: torch.Tensor | None = None) -> None:
        hp = self.hparams
        self.head = create_head(hp.head, hp.embedding_size, num_classes, s=hp.scale, m=hp.margin)
        if init is not None:
            with torch.no_grad():
                self.head.weight.copy_(F.normalize(init, dim=1))
        self.hparams["num_classes"] = num_classes

    def setup(self, stage: str) -> None:
        self.check_image_size(self.trainer.datamodule)
        if self.head is None:
            self.build_head(self.trainer.datamodule.num_classes)

    def check_image_size(self, datamodule) -> None:
        """The data must come at the size the backbone was built for (θ0's size, for an unlearning method)."""
        size = getattr(datamodule, "hparams", {}).get("image_size")
        if size is not None and size != self.hparams.image_size:
            raise ConfigError(f"the model takes {self.hparams.image_size} px images but data.image_size is {size}: "
                              f"set --data.image_size {self.hparams.image_size}")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # a resumed run continues the cost ledger
        elapsed = time.perf_counter() - self._fit_started if self._fit_started else 0.0
        checkpoint["cost"] = {**self.cost, "wall_seconds": self._wall_before + elapsed}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        cost = dict(checkpoint.get("cost", {}))
        self._wall_before = float(cost.pop("wall_seconds", 0.0))
        self.cost.update(cost)

    def configure_model(self) -> None:
        """Compile the backbone once, lazily (the hook runs at the start of every fit/validate/test)."""
        if self.hparams.get("compile") and not getattr(self, "_compiled", False):
            self.backbone.compile()
            self._compiled = True

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised student embeddings; counts images for the cost ledger."""
        n = images.shape[0]
        self.cost["forward_images"] += n
        if torch.is_grad_enabled() and self.training:
            self.cost["backward_images"] += n
        return F.normalize(self.backbone(images).float(), dim=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    # ------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        losses = self.compute_loss(batch)
        if isinstance(losses, torch.Tensor):
            losses = {"loss": losses}
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"the loss is {losses['loss'].item()}: lower model.lr or check the data")
        batch_size = next(iter(batch.values()))["image"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=True,
                      batch_size=batch_size)
        return losses["loss"]

    def compute_loss(self, batch: dict) -> torch.Tensor | dict[str, torch.Tensor]:
        """Margin loss on the training part (pretraining and the retrain oracle)."""
        data = batch[self.parts[0]]
        return self.head.loss(self.embed(data["image"]), data["label"])

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(hp.warmup_epochs * total / max(1, self.trainer.max_epochs or 1))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            t = (step - warmup) / max(1, total - warmup)
            if hp.scheduler == "cosine":
                return float(0.5 * (1 + np.cos(np.pi * min(t, 1.0))))
            if hp.scheduler == "step":
                return 0.1 ** ((t >= 0.6) + (t >= 0.85))
            return 1.0

        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------- evaluation
    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Embeddings for the evaluation callback (fp32, normalised); pair images add their flip."""
        images = batch["image"]
        z = self.backbone(images).float()
        if dataloader_idx > 0 and self.hparams.flip_pairs:
            z = z + self.backbone(images.flip(-1)).float()
        return {"embedding": F.normalize(z, dim=1)}

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self.validation_step(batch, batch_idx, dataloader_idx)

    # ------------------------------------------------------------- cost ledger
    def on_fit_start(self) -> None:
        self._fit_started = time.perf_counter()

    def cost_summary(self) -> dict[str, float]:
        """The run's cost (summed over ranks): wall seconds, optimiser steps, images seen."""
        counts = dict(self.cost)
        if self.trainer is not None and self.trainer.world_size > 1:
            t = torch.tensor(list(counts.values()), dtype=torch.float64, device=self.device)
            t = self.trainer.strategy.reduce(t, reduce_op="sum")
            counts = dict(zip(counts, t.tolist()))
        out = {f"cost/{k}": float(v) for k, v in counts.items()}
        out["cost/optimizer_steps"] = float(self.trainer.global_step if self.trainer else 0)
        out["cost/wall_seconds"] = self._wall_before + (time.perf_counter() - self._fit_started
                                                        if self._fit_started else 0.0)
        return out


class Pretrain(FaceModule):
    """Margin loss on D = D_f ∪ D_r: produces the original model θ0."""

    batches = BatchRecipe(parts=("train",))


class Retrain(FaceModule):
    """The retrain-from-scratch oracle: the pretraining recipe on D_r only."""

    batches = BatchRecipe(parts=("retain",))


def read_checkpoint(path: str | Path) -> dict:
    """A Lightning checkpoint or a plain state dict, read without running code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: give the path of the original model")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors, truncated zips
        raise CheckpointError(f"cannot read checkpoint {path} safely: {weights_only_refusal(err)}") from err


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
    tuning: ClassVar[SearchSpace] = SearchSpace()  # lr a decade either side of its default, retain_weight 0 or 1
    label_free_baseline: ClassVar[bool] = False
    identity_study: ClassVar[bool] = True
    demo_overrides: ClassVar[Mapping[str, object]] = {}

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
        arch = self._architecture_of(original) if original else {}
        kwargs.update(arch)
        super().__init__(lr=lr, scheduler=scheduler, **kwargs)
        self.hparams.update(original=original, labels=labels, num_clusters=num_clusters,
                            retain_weight=retain_weight, freeze_bn=freeze_bn, min_steps=min_steps)
        self.teacher: nn.Module | None = None
        if self.uses_teacher:
            self.teacher = freeze(copy.deepcopy(self.backbone))
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
    @staticmethod
    def _architecture_of(original: str) -> dict:
        ckpt = read_checkpoint(original)
        hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
        return {k: hp[k] for k in ARCH_KEYS if hp and k in hp}

    def load_original(self) -> None:
        """Load θ0 into the student (and teacher); the head too where the checkpoint has one."""
        if self._original_loaded or not self.hparams.original:
            return
        ckpt = read_checkpoint(self.hparams.original)
        state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
        try:
            load_backbone_weights(self.backbone, state, strict=True)
        except CheckpointError as err:  # name the file, not "state dict"
            raise CheckpointError(f"{self.hparams.original}: {str(err).removeprefix('state dict: ')}") from err
        head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        if head_state:
            if self.head is None:
                self.build_head(head_state["weight"].shape[0])
            try:
                self.head.load_state_dict(head_state, strict=True)
            except RuntimeError as err:
                raise CheckpointError(f"head of {self.hparams.original} does not match: "
                                      f"{str(err).splitlines()[0]}") from err
        if self.teacher is not None:
            self.teacher.load_state_dict(self.backbone.state_dict())
        self._original_loaded = True

    @property
    def quality_model(self) -> nn.Module:
        """θ0's backbone, for the label-free quality score of the quality protocol."""
        self.load_original()
        return self.teacher if self.teacher is not None else self.backbone

    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        self.check_protocol(datamodule.hparams.protocol, self.hparams.labels)
        self.load_original()
        self.check_image_size(datamodule)
        if self.head is None:
            # an insightface backbone.pth has no head: start from θ0's identity centroids
            self.build_head(datamodule.num_classes, init=self._identity_centroids(datamodule))
        if self.uses_teacher:
            # θ0's head rows, frozen, for teacher logits (not saved: θ0 is reloaded from ``original``)
            self.register_buffer("teacher_head", self.head.class_rows().detach().clone(), persistent=False)
        if stage == "fit" and self.pseudo_labels:
            self._build_pseudo_labels(datamodule)

    # ------------------------------------------------------------- teacher embeddings and clustering
    @torch.no_grad()
    def embed_indices(self, indices, model: nn.Module | None = None) -> torch.Tensor:
        """Normalised embeddings of source ``indices`` (every rank computes all of them, in order)."""
        model = model if model is not None else (self.teacher or self.backbone)
        # the model's own device: in ``setup`` Lightning already reports the GPU as ``self.device`` while the
        # modules are still on the CPU
        device = next(model.parameters()).device
        out = []
        with eval_mode(model):  # restores each submodule's own mode: frozen BatchNorm stays frozen
            for batch in self.trainer.datamodule.eval_loader(indices, shard=False):
                out.append(F.normalize(model(batch["image"].to(device)).float(), dim=1))
        self.cost["teacher_forward_images"] += len(indices)
        return torch.cat(out) if out else torch.empty(0, self.hparams.embedding_size, device=device)

    def broadcast(self, obj):
        """Rank 0's value on every rank (K-means must be computed once and shared under DDP)."""
        if self.trainer is not None and self.trainer.world_size > 1:
            return self.trainer.strategy.broadcast(obj, src=0)
        return obj

    def _identity_centroids(self, datamodule) -> torch.Tensor:
        indices = datamodule.part_indices("train")
        z = self.embed_indices(indices, self.backbone)
        labels = torch.as_tensor(datamodule.labels[indices], device=z.device)
        centroids = torch.zeros(datamodule.num_classes, z.shape[1], device=z.device).index_add_(0, labels, z)
        return F.normalize(centroids, dim=1).cpu()

    def cluster_part(self, part: str, k: int | None, model: nn.Module | None = None,
                     who: str = "pseudo-labels") -> tuple[torch.Tensor, torch.Tensor]:
        """K-means on the embeddings of a data part (θ0's unless ``model``), once on rank 0 and broadcast.

        Returns normalised centroids and a table source index → cluster (−1 outside the part); K defaults to
        round(sqrt(|part|)).
        """
        from unlearnkit.metrics.search import kmeans

        dm = self.trainer.datamodule
        indices = dm.part_indices(part)
        k = k or max(2, round(np.sqrt(len(indices))))
        if k > len(indices):
            raise ConfigError(f"{who} needs K ≤ |D_{part[0]}|: {k} clusters for {len(indices)} {part} images")
        result = None
        if self.global_rank == 0:
            centroids, assign = kmeans(self.embed_indices(indices, model).cpu(), k, seed=dm.hparams.seed)
            table = torch.full((len(dm.source),), -1, dtype=torch.long)
            table[torch.as_tensor(indices)] = assign.long()
            result = (F.normalize(centroids.float(), dim=1), table)
        centroids, table = self.broadcast(result)
        return centroids.to(self.device), table.to(self.device)

    def _build_pseudo_labels(self, datamodule) -> None:
        """K-means on θ0's embeddings of the training images → a label per image and a centroid head."""
        centroids, table = self.cluster_part("train", self.hparams.num_clusters)
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

    @torch.no_grad()
    def teacher_embed(self, images: torch.Tensor) -> torch.Tensor:
        self.cost["teacher_forward_images"] += images.shape[0]
        return F.normalize(self.teacher(images).float(), dim=1)

    def teacher_logits(self, z_teacher: torch.Tensor) -> torch.Tensor:
        """θ0's scaled cosine logits for teacher embeddings (cluster centroids in the label-free variant)."""
        if self.pseudo_labels:
            return self.pseudo_head.logits(z_teacher)
        return self.hparams.scale * z_teacher @ F.normalize(self.teacher_head, dim=1).T

    def retain_term(self, batch: dict) -> torch.Tensor:
        """λ_r · margin loss on a retain batch (NegGrad+ style), 0 when off or no retain batch is drawn."""
        if self.hparams.retain_weight == 0 or "retain" not in batch:
            return torch.zeros((), device=self.device)
        data = batch["retain"]
        return self.hparams.retain_weight * self.margin_loss(self.embed(data["image"]), self.labels_of(data))

    def trainable_parameters(self):
        teacher = {id(p) for p in self.teacher.parameters()} if self.teacher is not None else set()
        return [p for p in self.parameters() if p.requires_grad and id(p) not in teacher]

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
        """The teacher, and with ``freeze_bn`` the student's BatchNorm layers, in eval mode while training."""
        if self.teacher is not None:
            self.teacher.eval()
        if self.hparams.get("freeze_bn", True):
            # forget batches are small and one-sided: their statistics would shift every embedding
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
