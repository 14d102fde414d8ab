"""The evaluation callback: embed each evaluation set once per validation epoch and compute SPEC §3.

Batches' embeddings (from ``validation_step``) go into ``EmbeddingCollector``s, gathered over ranks with each
sample counted once; every metric is then computed from those gathered tensors by the functional metrics.
The original model θ0 and the retrain oracle are embedded through the same (rank-sharded) loaders once per
run, and their metrics cached: they are the references of UES, membership inference and the oracle gap.
"""

from __future__ import annotations

import csv
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unlearnkit.data.datamodule import GROUP_ID
from unlearnkit.errors import ConfigError, DataError
from unlearnkit.metrics import functional as MF
from unlearnkit.metrics.collector import EmbeddingCollector
from unlearnkit.utils.io import atomic_open, write_json

REFERENCES = ("original", "oracle")
METRIC_PREFIXES = ("forget", "retain", "verify", "mia", "UES", "original", "oracle", "oracle_gap", "drift", "noise",
                   "memorisation", "retain_heldout")

# Every rank computes these values from the same gathered set, so Lightning's advice to sync them under DDP
# (one warning per key) does not apply; the filter matches our keys only.
warnings.filterwarnings("ignore", message=rf"It is recommended to use `self.log\('({'|'.join(METRIC_PREFIXES)})[/']")


@dataclass
class EvalEmbeddings:
    """Gathered embeddings of one model: the retrieval set (tensors by field) and each pair set's images."""

    retrieval: dict[str, torch.Tensor]
    pairs: dict[str, torch.Tensor] = field(default_factory=dict)

    def group(self, *names: str) -> torch.Tensor:
        """Boolean mask of the retrieval samples in any of the evaluation groups ``names``."""
        codes = torch.tensor([GROUP_ID[n] for n in names])
        return torch.isin(self.retrieval["groups"].cpu(), codes)


def query_groups(protocol: str) -> dict[str, str]:
    """Which evaluation group is the forget and the retain query set (and gallery) under a protocol."""
    if protocol == "identity":  # held-out images of forgotten vs retained people
        return {"forget": "forget_test", "retain": "retain_test"}
    return {"forget": "forget_train", "retain": "retain_train"}  # the forgotten samples themselves


def far_name(far: float) -> str:
    """``1e-3`` for 0.001: the FAR as it appears in metric names."""
    return np.format_float_scientific(far, trim="-", exp_digits=1)


def retrieval_metrics(ev: EvalEmbeddings, protocol: str, ks=(1, 5)) -> dict[str, float]:
    """``forget/mAP``, ``forget/R@k``, ``forget/CS`` and the same for ``retain/``."""
    data = ev.retrieval
    groups = query_groups(protocol)
    gallery = ev.group(*groups.values())
    out: dict[str, float] = {}
    for name, group in groups.items():
        query = ev.group(group)
        if not query.any():
            continue
        r = MF.retrieval(data["embeddings"], data["labels"], ks=ks, query_mask=query, gallery_mask=gallery)
        out.update({f"{name}/{k}": float(v) for k, v in r.items() if k != "n_queries"})
        out[f"{name}/CS"] = float(MF.compactness(data["embeddings"][query], data["labels"][query]))
    return out


def heldout_metrics(ev: EvalEmbeddings, ks=(1, 5)) -> dict[str, float]:
    """Sample and quality protocols: retain utility on held-out images and the memorisation gap.

    Both query the retain training images (the gallery). ``retain_heldout/…``: mAP, R@k of the held-out
    images (``retain_test``), so retained utility is not read off training images only. ``memorisation/…``:
    mAP, R@1 of the forget training images minus that of the held-out images of the same people: > 0 where
    the model still treats the forgotten images as training images (θ0), ≈ 0 for a model that never saw them
    (the oracle); the two parts as ``memorisation/forget_train/…`` and ``memorisation/heldout/…``.
    """
    data = ev.retrieval
    z, labels = data["embeddings"], data["labels"].cpu()
    gallery = ev.group("retain_train")
    heldout = ev.group("retain_test")
    out: dict[str, float] = {}
    if not gallery.any() or not heldout.any():
        return out
    r = MF.retrieval(z, labels, ks=ks, query_mask=heldout, gallery_mask=gallery)
    out.update({f"retain_heldout/{k}": float(v) for k, v in r.items() if k != "n_queries"})
    forget = ev.group("forget_train")
    same_people = heldout & torch.isin(labels, torch.unique(labels[forget]))
    if forget.any() and same_people.any():
        parts = {name: MF.retrieval(z, labels, ks=(1,), query_mask=mask, gallery_mask=gallery)
                 for name, mask in (("forget_train", forget), ("heldout", same_people))}
        for metric in ("mAP", "R@1"):
            for name, values in parts.items():
                out[f"memorisation/{name}/{metric}"] = float(values[metric])
            out[f"memorisation/{metric}"] = float(parts["forget_train"][metric] - parts["heldout"][metric])
    return out


def drift(ev: EvalEmbeddings, reference: EvalEmbeddings) -> float:
    """Mean cosine distance ``1 − cos(f_θ(x), f_θ0(x))`` over the retrieval set (matched by sample id)."""
    a, b = ev.retrieval, reference.retrieval
    if not torch.equal(a["ids"].cpu(), b["ids"].cpu()):
        raise ValueError("the two models were evaluated on different samples")
    return float(1 - (a["embeddings"].double() * b["embeddings"].double().to(a["embeddings"].device)).sum(1).mean())


def matched_noise(reference: EvalEmbeddings, target_drift: float, seed: int = 0) -> EvalEmbeddings:
    """``reference`` (θ0's embeddings) plus isotropic Gaussian noise, renormalised, scaled so that its drift
    from ``reference`` equals ``target_drift`` (bisection on the noise scale): the noise baseline."""
    g = torch.Generator().manual_seed(seed)
    data = reference.retrieval
    z0 = data["embeddings"].cpu().double()
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64) / z0.shape[1] ** 0.5
    pair_noise = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) / v.shape[1] ** 0.5
                  for k, v in reference.pairs.items()}

    def noisy(z, n, sigma):
        return F.normalize(z + sigma * n, dim=1)

    lo, hi = 0.0, 1e3
    if target_drift <= 0:
        hi = 0.0
    for _ in range(60):  # drift grows with sigma
        mid = (lo + hi) / 2
        if float(1 - (noisy(z0, noise, mid) * z0).sum(1).mean()) < target_drift:
            lo = mid
        else:
            hi = mid
    sigma = (lo + hi) / 2
    retrieval = {**data, "embeddings": noisy(z0, noise, sigma).float().to(data["embeddings"].device)}
    pairs = {k: noisy(v.cpu().double(), pair_noise[k], sigma).float().to(v.device) for k, v in reference.pairs.items()}
    return EvalEmbeddings(retrieval, pairs)


PEOPLE = ("retained", "unseen")


def pair_people(datamodule, pair_set) -> np.ndarray:
    """Who each image of ``pair_set`` shows, relative to the run's split: ``forgotten`` (a forgotten person of
    the identity protocol), ``retained`` (a person with training images who is not forgotten), ``unseen`` (a
    person of the data set without any training image) or ``unknown`` (an image from outside the data set,
    e.g. an external benchmark; matched by image key)."""
    split, source = datamodule.split, datamodule.source
    identity_of = dict(zip(source.keys, source.identities))
    trained = {source.identities[i] for i in split.indices("train")}
    forgotten = set(split.forget_identities) if split.protocol == "identity" else set()
    out = []
    for key in pair_set.keys:
        person = identity_of.get(key)
        if person is None:
            out.append("unknown")
        elif person in forgotten:
            out.append("forgotten")
        else:
            out.append("retained" if person in trained else "unseen")
    return np.array(out)


def verification_metrics(ev: EvalEmbeddings, pair_sets, far: float = 1e-3, folds: int = 10,
                         people: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """``verify/<name>/acc`` (± ``acc_std``) and ``verify/<name>/tar@far=<far>`` of each pair set.

    With ``people`` (``pair_people`` of each set's images), also ``verify/<name>/retained/…`` and
    ``verify/<name>/unseen/…``: the same on the pairs whose two images both show retained people, or both
    unseen people, so that utility is never measured on forgotten people; each where it has at least ``folds``
    pairs, same and different ones among them.
    """
    out: dict[str, float] = {}
    for pair_set in pair_sets:
        z = ev.pairs[pair_set.name]
        pairs = torch.as_tensor(pair_set.pairs, dtype=torch.long)
        issame = np.asarray(pair_set.issame, dtype=bool)
        subsets = {"": np.ones(len(issame), dtype=bool)}
        if people is not None and pair_set.name in people:
            who = people[pair_set.name]
            for group in PEOPLE:
                subsets[f"{group}/"] = (who[pairs[:, 0].numpy()] == group) & (who[pairs[:, 1].numpy()] == group)
        for prefix, keep in subsets.items():
            if prefix and (keep.sum() < folds or issame[keep].all() or not issame[keep].any()):
                continue
            chosen = pairs[torch.from_numpy(keep)]
            r = MF.verification(z[chosen[:, 0]], z[chosen[:, 1]], issame[keep], folds=folds, far=far)
            out[f"verify/{pair_set.name}/{prefix}acc"] = float(r["acc"])
            out[f"verify/{pair_set.name}/{prefix}acc_std"] = float(r["acc_std"])
            out[f"verify/{pair_set.name}/{prefix}tar@far={far_name(far)}"] = float(r["tar@far"])
    return out


def membership_metrics(ev: EvalEmbeddings, seed: int = 0) -> dict[str, float]:
    """Membership inference of SPEC §3 against the model that produced ``ev``.

    Members are the retain training images, non-members the held-out images of retained identities, targets
    the forget training images. Features come from this model only, against its embeddings of the retain
    training images (never a forget image), each sample leaving one reference image out (itself, for a
    member): see ``mia_features``. Empty when there are too few members or non-members.
    """
    data = ev.retrieval
    z, labels, ids = data["embeddings"].cpu(), data["labels"].cpu(), data["ids"].cpu()
    reference = ev.group("retain_train")
    if int(reference.sum()) < 2:
        return {}

    def features(group: str) -> np.ndarray:
        m = ev.group(group)
        return MF.mia_features(z[m], labels[m], z[reference], labels[reference], ids[m], ids[reference], seed=seed)

    members, nonmembers, targets = features("retain_train"), features("retain_test"), features("forget_train")
    if min(len(members), len(nonmembers)) < 2 or len(targets) == 0:
        return {}
    r = MF.membership_inference(members, nonmembers, targets, seed=seed)
    return {f"mia/{k}": float(v) for k, v in r.items()}


def ues_metrics(model: dict[str, float], original: dict[str, float], oracle: dict[str, float] | None = None,
                metric: str = "mAP", reference: str = "original") -> dict[str, float]:
    """UES of ``model`` (flat metric dicts as ``retrieval_metrics`` gives) and its parts F and R.

    ``reference="original"``: SPEC §3 as written, F and R against θ0. ``reference="oracle"``: F is how close
    the forget value is to the oracle's, on the scale of the oracle's own forgetting,
    ``1 − |P_f(θ) − P_f(θ*)| / |P_f(θ0) − P_f(θ*)|`` (forgetting more than the oracle is penalised like
    forgetting less), and R the drift from the oracle's retain value, so the oracle itself scores 1. NaN when a
    needed value is missing.
    """
    if reference not in REFERENCES:
        raise ConfigError(f"ues_reference must be 'original' or 'oracle', got {reference!r}")
    f_key, r_key = f"forget/{metric}", f"retain/{metric}"
    needed = [model.get(f_key), model.get(r_key), original.get(f_key)]
    if reference == "oracle":
        needed += [(oracle or {}).get(f_key), (oracle or {}).get(r_key)]
    else:
        needed.append(original.get(r_key))
    nan = float("nan")
    if any(v is None or not math.isfinite(v) for v in needed):
        return {"UES": nan, "UES/F": nan, "UES/R": nan}
    pf, pr = model[f_key], model[r_key]
    if reference == "original":
        r = MF.ues(original[f_key], pf, original[r_key], pr)
    else:  # F and R both measure closeness to the oracle, in either direction
        pf_star, pr_star = oracle[f_key], oracle[r_key]
        scale, gap = abs(original[f_key] - pf_star), abs(pf - pf_star)
        f = min(max(1.0 - gap / scale, 0.0), 1.0) if scale > 0 else float(gap == 0)
        retention = MF.ues(1.0, 0.0, pr_star, pr)["R"]
        score = 2 * f * retention / (f + retention) if f + retention > 0 else 0.0
        r = {"UES": score, "F": f, "R": retention}
    return {"UES": float(r["UES"]), "UES/F": float(r["F"]), "UES/R": float(r["R"])}


def oracle_gaps(model: dict[str, float], oracle: dict[str, float]) -> dict[str, float]:
    """``oracle_gap/<metric>`` = |model − oracle| for every metric both have (spreads excluded)."""
    return {f"oracle_gap/{k}": abs(model[k] - v) for k, v in oracle.items()
            if k in model and not k.endswith("_std")}


def per_identity_rows(evs: dict[str, EvalEmbeddings], protocol: str, names=None) -> list[dict]:
    """One row per forgotten identity: its R@1, AP (mean over its held-out queries) and CS under each model.

    ``evs`` maps a column prefix (``before``, ``after``, ``oracle``) to that model's embeddings; queries and
    gallery are those of ``retrieval_metrics``, so the rows average to ``forget/R@1`` and ``forget/mAP``.
    """
    groups = query_groups(protocol)
    first = next(iter(evs.values()))
    forget = first.group(groups["forget"])
    labels = first.retrieval["labels"].cpu()
    rows = []
    for label in torch.unique(labels[forget]).tolist():
        query = forget & (labels == label)
        name = names[label] if names is not None else str(label)
        row = {"identity": name, "label": label, "images": int(query.sum())}
        for prefix, ev in evs.items():
            z = ev.retrieval["embeddings"].cpu()
            r = MF.retrieval(z, labels, ks=(1,), query_mask=query, gallery_mask=ev.group(*groups.values()))
            cs = MF.compactness_per_identity(z[query], labels[query]).get(label, float("nan"))
            row.update({f"R@1_{prefix}": r["R@1"], f"AP_{prefix}": r["mAP"], f"CS_{prefix}": cs})
        rows.append(row)
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["identity"])
        writer.writeheader()
        writer.writerows(rows)


def load_reference(path: str, like: nn.Module | None = None) -> nn.Module:
    """A frozen backbone from a checkpoint: its recorded architecture, else the module ``like``'s."""
    from unlearnkit.backbones import create_backbone, load_backbone_weights
    from unlearnkit.methods.base import freeze, read_checkpoint

    ckpt = read_checkpoint(path)
    hp = (ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None) or {}
    own = getattr(like, "hparams", {}) if like is not None else {}
    arch = {k: hp.get(k, own.get(k)) for k in ("backbone", "embedding_size", "image_size")}
    kwargs = {k: v for k, v in arch.items() if k != "backbone" and v is not None}
    backbone = create_backbone(arch["backbone"] or "timm_resnet10t", **kwargs)
    load_backbone_weights(backbone, ckpt, strict=True)
    return freeze(backbone)


@torch.no_grad()
def embed_sets(backbone: nn.Module, datamodule, device, flip_pairs: bool = True) -> EvalEmbeddings:
    """Embed the evaluation sets as ``validation_step`` does, through the datamodule's rank-sharded loaders."""
    loaders = datamodule.val_dataloader()
    collectors = [EmbeddingCollector().to(device) for _ in loaders]
    for i, (loader, collector) in enumerate(zip(loaders, collectors)):
        for batch in loader:
            images = batch["image"].to(device)
            z = backbone(images).float()
            if i > 0 and flip_pairs:
                z = z + backbone(images.flip(-1)).float()
            collector.update(F.normalize(z, dim=1), batch["index"].to(device), batch.get("label"),
                             batch.get("group"))
    pairs = {p.name: c.compute()["embeddings"] for p, c in zip(datamodule.pair_sets, collectors[1:])}
    return EvalEmbeddings(collectors[0].compute(), pairs)


class FaceEvaluation(L.Callback):
    """Forgetting, retention, verification, UES, membership inference and the gap to the retrain oracle.

    Logged each validation epoch (so final values land in ``metrics.json``): ``forget/`` and ``retain/``
    mAP, R@k, CS; ``verify/<set>/acc`` and ``tar@far=…``; ``UES`` (with ``UES/F``, ``UES/R``); ``mia/…``;
    the original model's values as ``original/…`` and the oracle's as ``oracle/…`` with ``oracle_gap/…``.
    At the end, in the run directory: ``evaluation.json`` (settings and final values),
    ``forgetting_by_identity.csv`` (identity protocol), ``projection.png`` and ``cs_histograms.png``; the
    same go to W&B when a ``WandbLogger`` is attached.

    Args:
        ks: the k of R@k.
        far: the false-accept rate of TAR@FAR.
        folds: folds of the verification protocol.
        ues_metric: performance metric P of UES: ``mAP``, ``CS`` or ``R@k`` for a k in ``ks``.
        ues_reference: ``original`` (F and R against θ0, as SPEC §3) or ``oracle`` (against the retrain oracle).
        oracle: a retrain checkpoint; adds ``oracle/…`` and ``oracle_gap/…``.
        mia: run the membership-inference attack.
        plots: write the projection and CS-histogram plots.
        per_identity: write ``forgetting_by_identity.csv`` (identity protocol).
        save_embeddings: also save every model's gathered embeddings as ``embeddings.pt``.
        noise_baseline: also evaluate θ0's embeddings plus isotropic noise of the model's drift (``noise/…``).
        seed: the attack's subsampling and train/test split, and the noise baseline's noise.
    """

    def __init__(self, ks: tuple[int, ...] = (1, 5), far: float = 1e-3, folds: int = 10, ues_metric: str = "mAP",
                 ues_reference: str = "original", oracle: str | None = None, mia: bool = True, plots: bool = True,
                 per_identity: bool = True, save_embeddings: bool = False, noise_baseline: bool = True,
                 seed: int = 0) -> None:
        self.ks, self.far, self.folds = tuple(int(k) for k in ks), far, folds
        metrics = ("mAP", "CS", *(f"R@{k}" for k in self.ks))
        if ues_metric not in metrics:
            raise ConfigError(f"ues_metric {ues_metric!r} is not computed: choose one of {', '.join(metrics)}")
        if ues_reference not in REFERENCES:
            raise ConfigError(f"ues_reference must be 'original' or 'oracle', got {ues_reference!r}")
        if ues_reference == "oracle" and not oracle:
            raise ConfigError("ues_reference: oracle needs the retrain checkpoint: set oracle: <path>")
        if folds < 2:
            raise ConfigError(f"folds must be ≥ 2 (thresholds are chosen on the other folds), got {folds}")
        self.ues_metric, self.ues_reference, self.oracle = ues_metric, ues_reference, oracle
        self.mia, self.plots, self.per_identity, self.save_embeddings = mia, plots, per_identity, save_embeddings
        self.noise_baseline, self.seed = noise_baseline, seed
        self.collectors: list[EmbeddingCollector] = []
        self.last: dict[str, float] = {}
        self.last_ev: EvalEmbeddings | None = None
        self.references: dict[str, tuple[EvalEmbeddings, dict[str, float]]] = {}
        self._references_for = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Pair sets are checked as soon as the data module has loaded them: one too small for the folds would
        otherwise fail at the first evaluation, after a whole epoch of training."""
        for pair_set in getattr(trainer.datamodule, "pair_sets", None) or []:
            if len(pair_set) < self.folds:
                raise DataError(f"verification set {pair_set.name!r} has {len(pair_set)} pairs, fewer than the "
                                f"{self.folds} folds of the verification protocol: give a set of at least "
                                f"{self.folds} pairs, or set a smaller folds in the FaceEvaluation callback's init_args")

    # ------------------------------------------------------------------ gathering the evaluated model
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

    # ------------------------------------------------------------------ metrics
    def model_metrics(self, trainer, ev: EvalEmbeddings) -> dict[str, float]:
        """Every metric of one model that needs no reference: retrieval, CS, verification, MIA."""
        dm = trainer.datamodule
        out = retrieval_metrics(ev, dm.hparams.protocol, self.ks)
        if dm.hparams.protocol != "identity":
            out.update(heldout_metrics(ev, self.ks))
        people = {p.name: pair_people(dm, p) for p in dm.pair_sets}
        out.update(verification_metrics(ev, dm.pair_sets, self.far, self.folds, people))
        if self.mia:
            out.update(membership_metrics(ev, self.seed))
        return out

    def reference_paths(self, pl_module) -> dict[str, str]:
        """Checkpoints of θ0 (the module's ``original``, absent in pretraining) and of the oracle."""
        hparams = getattr(pl_module, "hparams", {}) if pl_module is not None else {}
        paths = {"original": hparams.get("original"), "oracle": self.oracle}
        return {k: str(v) for k, v in paths.items() if v}

    def reference(self, name: str, path: str, trainer, pl_module) -> tuple[EvalEmbeddings, dict[str, float]]:
        """θ0's or the oracle's embeddings and metrics: computed on first use, then cached for the run."""
        if self._references_for is not trainer.datamodule:  # another data module: other evaluation sets
            self.references, self._references_for = {}, trainer.datamodule
        if name not in self.references:
            backbone = load_reference(path, pl_module).to(pl_module.device)
            flip = bool(pl_module.hparams.get("flip_pairs", True))
            ev = embed_sets(backbone, trainer.datamodule, pl_module.device, flip)
            self.references[name] = (ev, self.model_metrics(trainer, ev))
        return self.references[name]

    def compute(self, trainer, ev: EvalEmbeddings, pl_module=None) -> dict[str, float]:
        """The model's metrics plus UES, ``original/…``, ``oracle/…`` and ``oracle_gap/…`` where available."""
        out = self.model_metrics(trainer, ev)
        refs = {name: self.reference(name, path, trainer, pl_module)
                for name, path in self.reference_paths(pl_module).items()}
        original, oracle = (refs[k][1] if k in refs else None for k in REFERENCES)
        if original is not None:
            out["drift"] = drift(ev, refs["original"][0])
            out.update(ues_metrics(out, original, oracle, self.ues_metric, self.ues_reference))
            out.update({f"original/{k}": v for k, v in original.items()})
        if oracle is not None:
            if original is not None:
                oracle = {**oracle, **ues_metrics(oracle, original, oracle, self.ues_metric, self.ues_reference),
                          "drift": drift(refs["oracle"][0], refs["original"][0])}
            out.update({f"oracle/{k}": v for k, v in oracle.items()})
            out.update(oracle_gaps(out, oracle))
        if original is not None and self.noise_baseline:
            noisy = matched_noise(refs["original"][0], out["drift"], self.seed)
            noise = self.model_metrics(trainer, noisy)
            noise["drift"] = drift(noisy, refs["original"][0])
            noise.update(ues_metrics(noise, original, oracle, self.ues_metric, self.ues_reference))
            if oracle is not None:
                noise.update(oracle_gaps(noise, oracle))
            out.update({f"noise/{k}": v for k, v in noise.items()})
        return out

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.collectors:
            return
        ev = self.gathered(trainer)
        for collector in self.collectors:
            collector.reset()
        self.last_ev = ev
        self.last = self.compute(trainer, ev, pl_module)
        pl_module.log_dict(self.last, sync_dist=False, add_dataloader_idx=False)

    # ------------------------------------------------------------------ final artefacts
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.write_artefacts(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self.write_artefacts(trainer, pl_module)

    def models(self) -> dict[str, EvalEmbeddings]:
        """The last evaluation's embeddings by role: ``before`` (θ0), ``after`` (this model), ``oracle``."""
        evs = {}
        if "original" in self.references:
            evs["before"] = self.references["original"][0]
        evs["after"] = self.last_ev
        if "oracle" in self.references:
            evs["oracle"] = self.references["oracle"][0]
        return evs

    def write_artefacts(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Run-directory files and W&B media from the last evaluation (global rank 0 only)."""
        if self.last_ev is None or not trainer.is_global_zero:
            return
        run_dir = Path(trainer.default_root_dir)
        dm = trainer.datamodule
        protocol = dm.hparams.protocol
        evs = self.models()
        settings = {"protocol": protocol, "ks": list(self.ks), "far": self.far, "folds": self.folds,
                    "ues_metric": self.ues_metric, "ues_reference": self.ues_reference,
                    "original": self.reference_paths(pl_module).get("original"), "oracle": self.oracle,
                    "mia": self.mia, "noise_baseline": self.noise_baseline, "model": type(pl_module).__name__}
        write_json(run_dir / "evaluation.json", {"settings": settings, "metrics": self.last})
        tables = {"metrics": [{"metric": k, "value": v} for k, v in sorted(self.last.items())]}
        if self.per_identity and protocol == "identity":
            names = getattr(getattr(dm, "source", None), "identity_names", None)
            rows = per_identity_rows(evs, protocol, names)
            write_csv(run_dir / "forgetting_by_identity.csv", rows)
            tables["forgetting_by_identity"] = rows
        images = {}
        if self.plots:
            from unlearnkit.callbacks import plots

            images["projection"] = plots.save_projection(evs, run_dir / "projection.png")
            images["cs_histograms"] = plots.save_cs_histograms(evs, protocol, run_dir / "cs_histograms.png")
        if self.save_embeddings:
            with atomic_open(run_dir / "embeddings.pt", "wb") as handle:
                torch.save({k: {"retrieval": {f: t.cpu() for f, t in ev.retrieval.items()},
                                "pairs": {p: t.cpu() for p, t in ev.pairs.items()}} for k, ev in evs.items()},
                           handle)
        log_to_wandb(trainer, tables, images)


def log_to_wandb(trainer: L.Trainer, tables: dict[str, list[dict]], images: dict[str, Path]) -> None:
    """Tables and images to every attached ``WandbLogger``; a W&B failure is a warning, never a failed run."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers:
        if not isinstance(logger, WandbLogger):
            continue
        try:
            for key, rows in tables.items():
                if rows:
                    columns = list(rows[0])
                    logger.log_table(key=f"eval/{key}", columns=columns, data=[[r[c] for c in columns] for r in rows])
            for key, path in images.items():
                logger.log_image(key=f"eval/{key}", images=[str(path)])
        except Exception as err:  # W&B must never fail a finished run
            warnings.warn(f"could not log the evaluation tables/images to W&B: {err}", stacklevel=2)
