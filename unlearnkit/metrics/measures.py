"""SPEC §3 measures of one model, as plain functions over its gathered embeddings (``EvalEmbeddings``).

Each returns a flat ``{key: value}`` dict; ``unlearnkit.metrics.suite`` registers them and runs them for the
model, θ0, the oracle and the noise baseline. Nothing here needs a Trainer: tests call them on hand-made
embeddings.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.errors import ConfigError
from unlearnkit.metrics import functional as MF
from unlearnkit.metrics.collector import EvalEmbeddings
from unlearnkit.protocols import UTILITY_PEOPLE, query_groups

REFERENCES = ("original", "oracle")  # what UES may measure forgetting against (option ues_reference)


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


def verification_metrics(ev: EvalEmbeddings, pair_sets, far: float = 1e-3, folds: int = 10,
                         people: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """``verify/<name>/acc`` (± ``acc_std``) and ``verify/<name>/tar@far=<far>`` of each pair set.

    With ``people`` (``protocols.pair_people`` of each set's images), also ``verify/<name>/retained/…`` and
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
            for group in UTILITY_PEOPLE:
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

    def features(group: str) -> tuple[np.ndarray, torch.Tensor]:
        m = ev.group(group)
        return (MF.mia_features(z[m], labels[m], z[reference], labels[reference], ids[m], ids[reference], seed=seed),
                labels[m])

    (members, member_people), (nonmembers, nonmember_people), (targets, target_people) = (
        features(g) for g in ("retain_train", "retain_test", "forget_train"))
    matched, _ = MF.matched_members(member_people.numpy(), nonmember_people.numpy(), np.random.default_rng(seed))
    if len(targets) == 0 or len(matched) < MF.MIA_FOLDS:
        return {}
    r = MF.membership_inference(members, nonmembers, targets, seed=seed, member_groups=member_people,
                                nonmember_groups=nonmember_people, target_groups=target_people)
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
