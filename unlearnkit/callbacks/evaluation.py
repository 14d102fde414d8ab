"""The evaluation callback: embed each evaluation set once per validation epoch and compute SPEC §3.

Batches' embeddings (from ``validation_step``) go into ``EmbeddingCollector``s, gathered over ranks with each
sample counted once; every metric is then computed from those gathered tensors by the functional metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import lightning as L
import torch

from unlearnkit.data.datamodule import GROUP_ID
from unlearnkit.metrics import functional as MF
from unlearnkit.metrics.collector import EmbeddingCollector


@dataclass
class EvalEmbeddings:
    """Gathered embeddings of one model: the retrieval set (tensors by field) and each pair set's images."""

    retrieval: dict[str, torch.Tensor]
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)


def query_groups(protocol: str) -> dict[str, str]:
    """Which evaluation group is the forget and the retain query set (and gallery) under a protocol."""
    if protocol == "identity":  # held-out images of forgotten vs retained people
        return {"forget": "forget_test", "retain": "retain_test"}
    return {"forget": "forget_train", "retain": "retain_train"}  # the forgotten samples themselves


def retrieval_metrics(ev: EvalEmbeddings, protocol: str, ks=(1, 5)) -> dict[str, float]:
    """``forget/mAP``, ``forget/R@k``, ``forget/CS`` and the same for ``retain/``."""
    data = ev.retrieval
    groups = query_groups(protocol)
    codes = torch.tensor([GROUP_ID[g] for g in groups.values()])
    gallery = torch.isin(data["groups"].cpu(), codes)
    out: dict[str, float] = {}
    for name, group in groups.items():
        query = data["groups"].cpu() == GROUP_ID[group]
        if not query.any():
            continue
        r = MF.retrieval(data["embeddings"], data["labels"], ks=ks, query_mask=query, gallery_mask=gallery)
        out.update({f"{name}/{k}": float(v) for k, v in r.items() if k != "n_queries"})
        out[f"{name}/CS"] = float(MF.compactness(data["embeddings"][query], data["labels"][query]))
    return out


def verification_metrics(ev: EvalEmbeddings, pair_sets, far: float = 1e-3, folds: int = 10) -> dict[str, float]:
    out: dict[str, float] = {}
    for pair_set in pair_sets:
        z = ev.pairs[pair_set.name]
        pairs = torch.as_tensor(pair_set.pairs, dtype=torch.long)
        r = MF.verification(z[pairs[:, 0]], z[pairs[:, 1]], pair_set.issame, folds=folds, far=far)
        out[f"verify/{pair_set.name}/acc"] = float(r["acc"])
        out[f"verify/{pair_set.name}/acc_std"] = float(r["acc_std"])
        out[f"verify/{pair_set.name}/tar@far={far:g}"] = float(r["tar@far"])
    return out


class FaceEvaluation(L.Callback):
    """Retrieval mAP / R@k and cluster compactness on forget and retain, verification on each pair set.

    Args:
        ks: the k of R@k.
        far: the false-accept rate of TAR@FAR.
        folds: folds of the verification protocol.
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5), far: float = 1e-3, folds: int = 10) -> None:
        self.ks, self.far, self.folds = tuple(ks), far, folds
        self.collectors: list[EmbeddingCollector] = []
        self.last: dict[str, float] = {}

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        n = 1 + len(trainer.datamodule.pair_sets)
        self.collectors = [EmbeddingCollector().to(pl_module.device) for _ in range(n)]

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.sanity_checking:
            return
        self.collectors[dataloader_idx].update(outputs["embedding"], batch["index"], batch.get("label"),
                                               batch.get("group"))

    def gathered(self, trainer) -> EvalEmbeddings:
        retrieval = self.collectors[0].compute()
        pairs = {p.name: c.compute()["embeddings"] for p, c in zip(trainer.datamodule.pair_sets, self.collectors[1:])}
        return EvalEmbeddings(retrieval, pairs)

    def compute(self, trainer, ev: EvalEmbeddings) -> dict[str, float]:
        dm = trainer.datamodule
        out = retrieval_metrics(ev, dm.hparams.protocol, self.ks)
        out.update(verification_metrics(ev, dm.pair_sets, self.far, self.folds))
        return out

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.collectors:
            return
        self.last = self.compute(trainer, self.gathered(trainer))
        for collector in self.collectors:
            collector.reset()
        pl_module.log_dict(self.last, sync_dist=False, add_dataloader_idx=False)
