"""Entry point of the multi-process tests (tests/test_ddp.py): run as a script, never inside pytest.

``python tests/ddp_script.py eval|train|sync --data DIR --original CKPT --out DIR [--devices 2]`` runs the
evaluation, a few unlearning steps of CURE, dispersion and a pseudo-label method (``train``), or one whole
epoch of each method variant named by ``--variants`` on data whose batch count no world size divides
(``sync``), under ``accelerator=cpu, strategy=ddp`` (gloo; the evaluation also on GPUs with
``--accelerator gpu``, nccl).
Lightning starts the other ranks by re-running this command; every rank writes what it holds to ``--out``
(``eval_rank{r}.json``, ``train_rank{r}.pt``), so the test can compare ranks with each other and with a
single process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ARCH, tiny_datamodule  # noqa: E402

from unlearnkit.callbacks.evaluation import FaceEvaluation  # noqa: E402
from unlearnkit.data.samplers import PKSampler  # noqa: E402
from unlearnkit.methods import load_all  # noqa: E402
from unlearnkit.methods.base import Pretrain, UnlearningMethod  # noqa: E402
from unlearnkit.methods.cure import Cure  # noqa: E402
from unlearnkit.methods.dispersion import Dispersion  # noqa: E402
from unlearnkit.methods.finetune import Finetune  # noqa: E402

# 15 + 15 + 6 + 15 = 51 evaluation images (odd), in batches of 8 so each rank ends on a partial batch
EVAL_DATA = dict(eval_per_group=15, eval_batch_size=8)


def make_trainer(devices: int, strategy: str, root: str, accelerator: str = "cpu", **overrides) -> L.Trainer:
    kwargs = dict(accelerator=accelerator, devices=devices, strategy=strategy if devices > 1 else "auto", logger=False,
                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=root)
    kwargs.update(overrides)
    return L.Trainer(**kwargs)


def evaluate(data: str, original: str, pairs: str | None, devices: int = 1, strategy: str = "ddp",
             root: str = ".", accelerator: str = "cpu") -> dict[str, float]:
    """Every FaceEvaluation metric of θ0 on the tiny set (retrieval, compactness, verification)."""
    pair_sets = [{"name": "pairs", "format": "list", "path": pairs, "image_root": data}] if pairs else None
    dm = tiny_datamodule(data, pairs=pair_sets, **EVAL_DATA)
    model = Pretrain.load_from_checkpoint(original, map_location="cpu")
    evaluation = FaceEvaluation(ks=(1, 5))
    trainer = make_trainer(devices, strategy, root, accelerator, callbacks=[evaluation])
    trainer.validate(model, datamodule=dm, verbose=False)
    counts = {"n_retrieval": len(dm.eval_groups()[0]), "n_pair_images": sum(p.num_images for p in dm.pair_sets)}
    return {**evaluation.last, **counts}


class CountingKmeans:
    """Wraps ``search.kmeans`` to count the calls of this rank (K-means must run on rank 0 only)."""

    def __init__(self, kmeans) -> None:
        self.kmeans, self.calls = kmeans, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.kmeans(*args, **kwargs)


def _params(model, original: str) -> dict:
    """A digest of each trained parameter (exact equality across ranks) and how far the backbone moved from θ0."""
    theta0 = torch.load(original, map_location="cpu", weights_only=True)["state_dict"]
    params = {k: v.detach().cpu() for k, v in model.named_parameters() if not k.startswith("teacher.")}
    digests = {k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest() for k, v in params.items()}
    moved = max((v - theta0[k]).abs().max().item() for k, v in params.items() if k.startswith("backbone."))
    return {"digests": digests, "moved": moved, "steps": model.trainer.global_step}


def train(data: str, original: str, devices: int, strategy: str, root: str) -> dict:
    """A few optimiser steps of CURE, dispersion and label-free fine-tuning; what each rank ends with."""
    from unlearnkit.metrics import search

    counter = CountingKmeans(search.kmeans)
    search.kmeans = counter
    out: dict = {}

    L.seed_everything(0)
    cure = Cure(original=original, lr=1e-2, num_clusters=3, retain_clusters=4)
    # two epochs of two steps: the forget centroids are recomputed from the student at epoch 1
    make_trainer(devices, strategy, root, max_epochs=2, limit_train_batches=2, limit_val_batches=0).fit(
        cure, datamodule=tiny_datamodule(data, protocol="sample", forget=0.2))
    out["cure"] = {**_params(cure, original), "forget_centroids": cure.forget_centroids.cpu(),
                   "forget_cluster": cure.forget_cluster.cpu(), "retain_centroids": cure.retain_centroids.cpu(),
                   "retain_cluster": cure.retain_cluster.cpu()}

    L.seed_everything(0)
    dispersion = Dispersion(original=original, lr=1e-2)
    make_trainer(devices, strategy, root, max_steps=3, limit_val_batches=0).fit(
        dispersion, datamodule=tiny_datamodule(data))
    out["dispersion"] = _params(dispersion, original)

    L.seed_everything(0)
    finetune = Finetune(original=original, labels="pseudo", num_clusters=6, lr=1e-2)
    make_trainer(devices, strategy, root, max_steps=2, limit_val_batches=0).fit(
        finetune, datamodule=tiny_datamodule(data, protocol="sample", forget=0.2))
    out["pseudo"] = {**_params(finetune, original), "table": finetune.pseudo_table.cpu(),
                     "centroids": finetune.pseudo_head.centroids.cpu()}
    out["kmeans_calls"] = counter.calls
    return out


# Data of the rank-synchronisation runs: 12 identities × 7 training images (one held out), batches of 8 (P×K =
# 2 × 4). No epoch's batch count is a multiple of 2 or 3: forget 49 / retain 35 / train 84 images (identity
# protocol, 7 people forgotten) are 7 / 5 / 11 batches, forget 33 / retain 51 (sample protocol) 5 / 7; and no
# rank's last batch of retain or train images is a single image (BatchNorm in train mode refuses one).
SYNC_DATA = dict(heldout_per_identity=1, batch_size=8, pk_identities=2, pk_images=4)
SYNC_FORGET = {"identity": 7, "sample": 33}


def variants() -> dict[str, dict]:
    """Every registered method as it can be run: supervised ones with identity labels (identity protocol) and
    label-free on pseudo-labels with a retain term (sample protocol); label-free ones on the sample protocol."""
    out = {}
    for name, cls in sorted(load_all().items()):
        if not issubclass(cls, UnlearningMethod):
            out[name] = dict(name=name, protocol="identity", kwargs={})
        elif cls.needs_labels:
            out[name] = dict(name=name, protocol="identity", kwargs={})
            out[f"{name}-pseudo"] = dict(name=name, protocol="sample",
                                         kwargs=dict(labels="pseudo", num_clusters=6, retain_weight=0.5))
        else:
            out[name] = dict(name=name, protocol="sample", kwargs={})
    return out


def build_variant(variant: dict, data: str, original: str):
    """The module and data module of a ``variants()`` entry on the synchronisation data."""
    cls = load_all()[variant["name"]]
    if issubclass(cls, UnlearningMethod):  # min_steps 0: one pass per epoch, not the stretched small-set epoch
        model = cls(original=original, lr=1e-3, min_steps=0, **variant["kwargs"])
    else:
        model = cls(**ARCH, lr=1e-2)
    dm = tiny_datamodule(data, protocol=variant["protocol"],
                         forget=SYNC_FORGET[variant["protocol"]], **SYNC_DATA)
    return model, dm


def epoch_batches(dm, model) -> int:
    """Batches of the part that fixes the epoch length, over all ranks, before padding to the world size."""
    loader = dm._train_loaders[model.train_parts[0]]
    sampler = loader.sampler.sampler
    if isinstance(sampler, PKSampler):
        return sampler.num_batches
    return math.ceil(sampler.num_samples / loader.batch_size)


def sync(data: str, original: str, devices: int, strategy: str, root: str, names: list[str]) -> dict:
    """One whole epoch of each named variant: the steps and parameters each rank ends with."""
    table, out = variants(), {}
    for name in names:
        L.seed_everything(0)
        model, dm = build_variant(table[name], data, original)
        trainer = make_trainer(devices, strategy, root, max_epochs=1, limit_val_batches=0)
        trainer.fit(model, datamodule=dm)
        out[name] = {**_params(model, original), "epoch_batches": epoch_batches(dm, model),
                     "rank_batches": trainer.num_training_batches}
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["eval", "train", "sync"])
    parser.add_argument("--data", required=True)
    parser.add_argument("--original", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pairs")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp")
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--variants", default="", help="comma-separated names of variants() for sync")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.task == "eval":
        result = evaluate(args.data, args.original, args.pairs, args.devices, args.strategy, str(out),
                          args.accelerator)
    elif args.task == "train":
        result = train(args.data, args.original, args.devices, args.strategy, str(out))
    else:
        result = sync(args.data, args.original, args.devices, args.strategy, str(out), args.variants.split(","))
    rank = int(os.environ.get("LOCAL_RANK", "0")) if args.devices > 1 else 0
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if args.task == "eval":
        (out / f"eval_rank{rank}.json").write_text(json.dumps({"world_size": world, "metrics": result}))
    else:
        torch.save({"world_size": world, **result}, out / f"{args.task}_rank{rank}.pt")


if __name__ == "__main__":
    main()
