"""``FaceModule``: the LightningModule every run shares: a backbone + margin head, its optimiser and schedule,
the evaluation outputs and the cost ledger. ``Pretrain`` and ``Retrain`` (``pretrain.py``) are it with a batch
recipe; ``UnlearningMethod`` (``base.py``) adds θ0.
"""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import ClassVar

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.backbones import create_backbone
from unlearnkit.batch_recipe import BatchRecipe
from unlearnkit.errors import ConfigError
from unlearnkit.heads import create_head


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
