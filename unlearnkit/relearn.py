"""Relearn time: how quickly forgotten data comes back (ERASURE's Anamnesis Index; Chundawat et al. 2023).

Every model gets the same fixed fine-tuning on the forget set D_f (``RelearnRecipe``): a CosFace loss against
fixed rows, the normalised centroids of the model's own embeddings of each D_f identity (heads differ between
models, and the oracle of the identity protocol has no class for a forgotten person, so no model's own head is
used); SGD, BatchNorm statistics frozen (eval mode), batches of forget images with random flips. Forget mAP is
measured every ``eval_every`` steps, as the evaluation measures it (``retrieval_metrics`` on the run's
retrieval set); the relearn time is the first step at which it reaches ``fraction`` × θ0's forget mAP, or
``max_steps`` if it never does (then ``reached`` is false: the time is a lower bound). θ0 itself needs 0 steps;
a model that kept what it should have forgotten needs few; the retrain oracle, which never saw D_f, needs the
most a faithful unlearning should need. The Anamnesis Index is the unlearned model's relearn time over the
oracle's (≈ 1: as hard to relearn as for a model that never saw the data; ≪ 1: the data was hidden, not removed).
"""

from __future__ import annotations

import copy
import importlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from unlearnkit.errors import ConfigError
from unlearnkit.frozen import embed_indices, load_frozen
from unlearnkit.heads.margin import CentroidHead
from unlearnkit.metrics.collector import EmbeddingCollector, EvalEmbeddings
from unlearnkit.metrics.measures import retrieval_metrics


@dataclass(frozen=True)
class RelearnRecipe:
    """The fixed fine-tuning on D_f every model gets (the same for θ0, the oracles and every method).

    Args:
        lr, momentum: SGD's, no weight decay.
        batch_size: forget images per step (D_f reshuffled each pass, random horizontal flips).
        max_steps: the cap: a model that has not relearned by then is reported at the cap, ``reached`` false.
        eval_every: steps between forget-mAP measurements (the relearn time is a multiple of it).
        scale, margin: the CosFace loss's s and m against the fixed identity centroids.
        fraction: the target, as a fraction of θ0's forget mAP.
        seed: the batches' order and flips.
    """

    # on the built-in audit set lr 0.01 took a retrain oracle's forget mAP from 0.74 to 0.07 in 5 steps (never
    # back above 0.09 in 100); at 1e-3 it stayed at 0.71-0.75 over 20 steps
    lr: float = 0.001
    momentum: float = 0.9
    batch_size: int = 32
    max_steps: int = 100
    eval_every: int = 5
    scale: float = 30.0
    margin: float = 0.35
    fraction: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.eval_every < 1 or self.batch_size < 1:
            raise ConfigError("the relearn recipe needs max_steps, eval_every and batch_size ≥ 1")
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"relearn fraction must be in (0, 1] (of θ0's forget mAP), got {self.fraction}")


def datamodule_of(run_dir: str | Path):
    """The data module a finished run was trained with (its ``config.yaml``), set up: the same split and
    evaluation set."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{path} not found: relearning needs a finished run's resolved config")
    data = yaml.safe_load(path.read_text())["data"]
    module, _, name = data["class_path"].rpartition(".")
    datamodule = getattr(importlib.import_module(module), name)(**(data.get("init_args") or {}))
    datamodule.setup("fit")
    return datamodule


@torch.no_grad()
def forget_map(model: torch.nn.Module, datamodule) -> float:
    """``forget/mAP`` of ``model`` on the data module's retrieval evaluation set, as the evaluation computes it."""
    was_training = model.training
    model.eval()
    collector = EmbeddingCollector()
    indices, groups = datamodule.eval_groups()
    for batch in datamodule.eval_loader(indices, groups, shard=False):
        z = F.normalize(model(batch["image"]).float(), dim=1)
        collector.update(z, batch["index"], batch["label"], batch["group"])
    model.train(was_training)
    return retrieval_metrics(EvalEmbeddings(collector.compute()), datamodule.hparams.protocol)["forget/mAP"]


def _forget_batches(datamodule, recipe: RelearnRecipe):
    """Endless shuffled batches of forget images (with random flips), seeded by the recipe."""
    from unlearnkit.data.datamodule import FaceDataset

    indices = datamodule.part_indices("forget")
    dataset = FaceDataset(datamodule.source, indices, datamodule.labels, datamodule.transform, random_flip=True)
    rng = np.random.default_rng(recipe.seed)
    while True:
        order = rng.permutation(len(indices))
        for start in range(0, len(order), recipe.batch_size):
            chunk = order[start:start + recipe.batch_size]
            flips = rng.random(len(chunk)) < 0.5
            yield dataset.__getitems__([(int(i), bool(f)) for i, f in zip(chunk, flips)])


def _centroid_head(model: torch.nn.Module, datamodule, recipe: RelearnRecipe) -> tuple[CentroidHead, dict]:
    """Fixed rows: the normalised mean of the model's embeddings of each forget identity's D_f images."""
    indices = datamodule.part_indices("forget")
    labels = datamodule.labels[indices]
    people = {int(y): k for k, y in enumerate(np.unique(labels))}
    with torch.no_grad():
        z = embed_indices(model, datamodule, indices)
    rows = torch.zeros(len(people), z.shape[1]).index_add_(0, torch.tensor([people[int(y)] for y in labels]), z)
    return CentroidHead(rows, s=recipe.scale, m=recipe.margin), people


def relearn(checkpoint: str | Path, datamodule, target: float, recipe: RelearnRecipe = RelearnRecipe()) -> dict:
    """Fine-tune the model of ``checkpoint`` on D_f by ``recipe`` until its forget mAP reaches ``target``.

    Returns ``steps`` (the relearn time), ``reached`` (false: capped at ``max_steps``) and the forget mAP
    measured at each checked step (``curve``: [step, forget mAP] pairs)."""
    torch.manual_seed(recipe.seed)
    model = copy.deepcopy(load_frozen(str(checkpoint)).backbone)
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()  # BatchNorm statistics frozen: relearning moves the weights only
    head, people = _centroid_head(model, datamodule, recipe)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum)
    curve = [[0, forget_map(model, datamodule)]]
    batches = _forget_batches(datamodule, recipe)
    step = 0
    while curve[-1][1] < target and step < recipe.max_steps:
        for _ in range(min(recipe.eval_every, recipe.max_steps - step)):
            batch = next(batches)
            labels = torch.tensor([people[int(y)] for y in batch["label"]])
            loss = head.loss(model(batch["image"]), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        curve.append([step, forget_map(model, datamodule)])
    reached = curve[-1][1] >= target
    return {"steps": step, "reached": bool(reached), "target": float(target), "curve": curve,
            "recipe": asdict(recipe)}
