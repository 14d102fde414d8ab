"""The metrics of SPEC §3 as plain functions of embeddings: retrieval, compactness, verification, UES, MIA.

Inputs may be torch tensors or numpy arrays; results are python floats (or dicts of them). Embeddings are
L2-normalised here, so callers can pass raw backbone outputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from unlearnkit.metrics.audit import final_score, forget_score  # the privacy audit's scores (SPEC §3)

__all__ = [
    "final_score",
    "forget_score",
    "retrieval",
    "compactness",
    "compactness_per_identity",
    "verification",
    "ues",
    "membership_inference",
    "mia_features",
]


def _embeddings(x) -> torch.Tensor:
    """A float32, L2-normalised 2-D tensor on the input's device (numpy arrays go to the CPU)."""
    x = torch.as_tensor(x).detach().float()
    if x.dim() != 2:
        raise ValueError(f"embeddings must be 2-D (n, d), got shape {tuple(x.shape)}")
    return F.normalize(x, dim=1)


def _numpy(a, dtype=None) -> np.ndarray:
    """A tensor (on any device) or array-like as a numpy array."""
    return np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=dtype)


def _label_codes(labels, n: int) -> tuple[np.ndarray, torch.Tensor]:
    """Distinct label values and each sample's index into them (labels may be ints or strings)."""
    values = _numpy(labels).reshape(-1)
    if values.shape[0] != n:
        raise ValueError(f"{values.shape[0]} labels for {n} embeddings")
    uniques, codes = np.unique(values, return_inverse=True)
    return uniques, torch.from_numpy(codes.reshape(-1).astype(np.int64))


def _mask(mask, n: int, device) -> torch.Tensor:
    if mask is None:
        return torch.arange(n, device=device)
    mask = torch.as_tensor(mask, device=device).reshape(-1).bool()
    if mask.numel() != n:
        raise ValueError(f"mask of {mask.numel()} entries for {n} embeddings")
    return mask.nonzero().squeeze(1)


# ---------------------------------------------------------------------------------------------- retrieval
def _order_keys(values: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """int64 keys ordered as (row, value): one sorted 1-D search then serves every row of a chunk at once.

    The float32 bit pattern is mapped to an unsigned order-preserving integer (exact, unlike adding a row
    offset to the float); ``+ 0.0`` turns -0.0 into +0.0 so that values equal as floats get equal keys.
    """
    bits = (values + 0.0).contiguous().view(torch.int32).to(torch.int64)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits) + 2**31
    return rows.to(torch.int64) * 2**32 + bits


def _chance_hit(k: int, greater: torch.Tensor, tied: torch.Tensor, tied_pos: torch.Tensor) -> torch.Tensor:
    """P(top-k holds a positive) when the best positive ties with ``tied`` items (``tied_pos`` positives)
    and ``greater`` negatives score above it, the tie order being random: 1 - C(tied-tied_pos, m)/C(tied, m)
    with m = k - greater free places."""
    free = k - greater
    miss = torch.ones_like(tied)
    for i in range(k):
        term = ((tied - tied_pos - i) / (tied - i).clamp(min=1)).clamp(min=0)
        miss = torch.where(i < free, miss * term, miss)
    hit = torch.where(free >= tied, torch.ones_like(miss), 1 - miss)
    return torch.where(free <= 0, torch.zeros_like(hit), hit)


# a chunk of queries holds at most this many scores (128 MB in float32), whatever chunk_size asks for
MAX_CHUNK_SCORES = 2**25
# share of a chunk's scores at or above the lowest positive beyond which searching every score is cheaper
# than picking those candidates out first (measured on 2 CPU cores, N = 20,000, d = 512)
DENSE_SHARE = 0.1


def _reach_histogram(scores: torch.Tensor, pos: torch.Tensor, best: torch.Tensor):
    """For each query row: how many gallery items reach exactly r of its positives (score >= positive
    score), r = 0..pmax, and how many score strictly above its best positive.

    Only items scoring at least the row's lowest positive can count. When they are few (trained models) they
    are picked out and placed among their row's positives by one binary search over (row, score) keys;
    otherwise every score is searched in its row's positives directly.
    """
    q, pmax = pos.shape
    row_ids = torch.arange(q, device=scores.device)
    share = (scores[:, ::16] >= pos[:, :1]).float().mean()  # an estimate on every 16th column picks the path
    if share > DENSE_SHARE:
        reached = torch.searchsorted(pos, scores, right=True, out_int32=True)
        bins = (reached + (row_ids * (pmax + 1)).int().unsqueeze(1)).reshape(-1)
        greater = (scores > best.unsqueeze(1)).sum(1)
    else:
        rows, cols = (scores >= pos[:, :1]).nonzero(as_tuple=True)
        values = scores[rows, cols]
        pos_keys = _order_keys(pos, row_ids.unsqueeze(1).expand(q, pmax)).reshape(-1)
        reached = torch.searchsorted(pos_keys, _order_keys(values, rows), right=True) - rows * pmax
        bins = rows * (pmax + 1) + reached
        greater = torch.bincount(rows, weights=(values > best[rows]).double(), minlength=q)
    hist = torch.bincount(bins, minlength=q * (pmax + 1)).reshape(q, pmax + 1)
    return hist, greater.double()


def _retrieval_chunk(scores: torch.Tensor, pos: torch.Tensor, n_pos: torch.Tensor, ks: Sequence[int]):
    """AP and R@k of a chunk of queries from their gallery scores and their positives' scores.

    ``pos`` holds each row's positive scores sorted ascending, padded with +inf. AP = mean over positives p of
    (#positives scoring >= p) / (#items scoring >= p): sklearn's step-wise AP, where a group of tied scores is
    one threshold.
    """
    pmax = pos.shape[1]
    top = (n_pos - 1).clamp(min=0).unsqueeze(1)
    best = pos.gather(1, top).squeeze(1)
    hist, greater = _reach_histogram(scores, pos, best)
    # at_least[:, j]: gallery items scoring >= the j-th lowest positive (the positive itself included)
    at_least = hist.flip(1).cumsum(1).flip(1)[:, 1:].double()
    # positives scoring >= the j-th lowest positive (ties share the count)
    pos_at_least = (n_pos.unsqueeze(1) - torch.searchsorted(pos, pos, right=False)).double()
    valid = torch.arange(pmax, device=pos.device) < n_pos.unsqueeze(1)
    precision = torch.where(valid, pos_at_least / at_least.clamp(min=1), torch.zeros_like(at_least))
    ap = precision.sum(1) / n_pos.clamp(min=1)

    tied = at_least.gather(1, top).squeeze(1) - greater
    tied_pos = pos_at_least.gather(1, top).squeeze(1)
    recalls = {k: _chance_hit(k, greater, tied, tied_pos) for k in ks}
    return ap, recalls


def retrieval(embeddings, labels, ks: Sequence[int] = (1, 5), query_mask=None, gallery_mask=None,
              chunk_size: int = 1024) -> dict[str, float]:
    """mAP and R@k by cosine, leave-one-out (each query against every other gallery image).

    AP equals sklearn's ``average_precision_score`` on the query's gallery scores (ties grouped); R@k counts
    ties at the k-th place by their expected value under random tie order, so identical embeddings score
    chance. Queries without a positive in the gallery are skipped; ``n_queries`` counts the others.
    Memory stays at one block of ``chunk_size`` queries x gallery scores (fewer queries for a gallery so
    large that the block would exceed ``MAX_CHUNK_SCORES``) and a few same-sized masks or indices.
    """
    x = _embeddings(embeddings)
    n, device = x.shape[0], x.device
    _, codes = _label_codes(labels, n)
    codes = codes.to(device)
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    queries = _mask(query_mask, n, device)
    gallery = _mask(gallery_mask, n, device)
    # gallery sorted by label: each label's positives are one contiguous block of columns
    gallery = gallery[torch.sort(codes[gallery], stable=True).indices]
    g_codes = codes[gallery]
    n_labels = int(codes.max()) + 1 if n else 0
    block_len = torch.bincount(g_codes, minlength=n_labels)
    block_start = torch.cumsum(block_len, 0) - block_len
    column_of = torch.full((n,), -1, dtype=torch.long, device=device)
    column_of[gallery] = torch.arange(gallery.numel(), device=device)
    g = x[gallery]
    pmax = int(block_len.max()) if gallery.numel() else 0
    chunk_size = max(1, min(chunk_size, MAX_CHUNK_SCORES // max(g.shape[0], 1)))

    ap_sum, hits, n_queries = 0.0, dict.fromkeys(ks, 0.0), 0
    for start in range(0, queries.numel() if pmax else 0, chunk_size):
        qi = queries[start:start + chunk_size]
        scores = x[qi] @ g.T
        rows = torch.arange(qi.numel(), device=device)
        self_col = column_of[qi]
        is_in = self_col >= 0
        scores[rows[is_in], self_col[is_in]] = -math.inf  # a query never retrieves itself
        q_codes = codes[qi]
        offsets = torch.arange(pmax, device=device)
        cols = block_start[q_codes].unsqueeze(1) + offsets
        valid = (offsets < block_len[q_codes].unsqueeze(1)) & (cols != self_col.unsqueeze(1))
        pos = scores.gather(1, cols.clamp(max=g.shape[0] - 1))
        pos = torch.where(valid, pos, torch.full_like(pos, math.inf)).sort(1).values
        n_pos = valid.sum(1)
        ap, recalls = _retrieval_chunk(scores, pos, n_pos, ks)
        has = n_pos > 0
        ap_sum += float(ap[has].sum())
        for k in ks:
            hits[k] += float(recalls[k][has].sum())
        n_queries += int(has.sum())
    nan = float("nan")
    out = {"mAP": ap_sum / n_queries if n_queries else nan}
    out.update({f"R@{k}": hits[k] / n_queries if n_queries else nan for k in ks})
    out["n_queries"] = n_queries
    return out


# -------------------------------------------------------------------------------------------- compactness
def compactness_per_identity(embeddings, labels) -> dict:
    """Mean pairwise cosine (i != j) of each identity's embeddings, for identities with >= 2 images.

    Uses ||sum z||^2 - sum ||z||^2 = sum_{i != j} z_i.z_j, so it costs O(n d) instead of a pairwise matrix.
    """
    x = _embeddings(embeddings).double()
    uniques, codes = _label_codes(labels, x.shape[0])
    codes = codes.to(x.device)
    sums = torch.zeros(len(uniques), x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, codes, x)
    norms = torch.zeros(len(uniques), dtype=x.dtype, device=x.device).index_add_(0, codes, (x * x).sum(1))
    counts = torch.bincount(codes, minlength=len(uniques)).double()
    pair_sum = (sums * sums).sum(1) - norms
    out = {}
    for i, label in enumerate(uniques.tolist()):
        if counts[i] >= 2:
            out[label] = float(pair_sum[i] / (counts[i] * (counts[i] - 1)))
    return out


def compactness(embeddings, labels) -> float:
    """Cluster Compactness Score: the mean over identities of their mean pairwise cosine (nan if none)."""
    per_identity = compactness_per_identity(embeddings, labels)
    return float(np.mean(list(per_identity.values()))) if per_identity else float("nan")


# ------------------------------------------------------------------------------------------- verification
def _fold_indices(n: int, folds: int):
    """sklearn's ``KFold(folds, shuffle=False)`` over the pair list, as insightface's LFold."""
    from sklearn.model_selection import KFold

    return KFold(n_splits=folds, shuffle=False).split(np.arange(n))


def _counts_below(dist: np.ndarray, issame: np.ndarray, thresholds: np.ndarray):
    """True and false accepts (dist < threshold, insightface's ``np.less``) at every threshold at once."""
    same = np.sort(dist[issame])
    diff = np.sort(dist[~issame])
    return (np.searchsorted(same, thresholds, side="left"), np.searchsorted(diff, thresholds, side="left"),
            same.size, diff.size)


def verification(emb1, emb2, issame, folds: int = 10, far: float = 1e-3) -> dict[str, float]:
    """Pair verification as insightface's ``eval/verification.py``: accuracy with 10-fold thresholds on
    squared L2 distance of normalised embeddings, and TAR at a target FAR (insightface's VAL@FAR).

    TAR@FAR: insightface interpolates FAR -> threshold with ``interp1d``, which fails on repeated FAR values
    (issues #2152, #2290); here each fold takes the largest threshold (grid step 0.001) whose train-fold FAR
    is <= the target and reports the test fold's TAR there. ``threshold`` is the mean of the per-fold
    accuracy thresholds.
    """
    z1 = F.normalize(torch.as_tensor(emb1).detach().cpu().double(), dim=1).numpy()
    z2 = F.normalize(torch.as_tensor(emb2).detach().cpu().double(), dim=1).numpy()
    same = _numpy(issame).reshape(-1).astype(bool)
    if not (z1.shape == z2.shape and z1.shape[0] == same.shape[0]):
        raise ValueError(f"pair shapes differ: {z1.shape}, {z2.shape}, {same.shape[0]} labels")
    dist = np.sum(np.square(z1 - z2), 1)
    acc_thresholds = np.arange(0, 4, 0.01)
    far_thresholds = np.arange(0, 4, 0.001)
    accuracy, best, tar = [], [], []
    for train, test in _fold_indices(len(dist), folds):
        tp, fp, n_same, n_diff = _counts_below(dist[train], same[train], acc_thresholds)
        train_acc = (tp + n_diff - fp) / len(train)
        threshold = acc_thresholds[np.argmax(train_acc)]
        test_pred = dist[test] < threshold
        accuracy.append(np.mean(test_pred == same[test]))
        best.append(threshold)

        _, fa, _, n_diff = _counts_below(dist[train], same[train], far_thresholds)
        train_far = fa / max(n_diff, 1)
        threshold = far_thresholds[np.nonzero(train_far <= far)[0][-1]]  # threshold 0 accepts nothing: FAR 0
        accepted = dist[test] < threshold
        n_same_test = same[test].sum()
        tar.append(np.sum(accepted & same[test]) / n_same_test if n_same_test else 0.0)
    return {"acc": float(np.mean(accuracy)), "acc_std": float(np.std(accuracy)), "threshold": float(np.mean(best)),
            "tar@far": float(np.mean(tar)), "tar@far_std": float(np.std(tar))}


# -------------------------------------------------------------------------------------------------- UES
def ues(perf_forget_before: float, perf_forget_after: float, perf_retain_before: float,
        perf_retain_after: float) -> dict[str, float]:
    """Unlearning Efficiency Score: harmonic mean of forgetting F and retention R (SPEC §3).

    Degenerate baselines: with nothing to forget (P_f(θ0) <= 0) F = 0; with P_r(θ0) <= 0 there is no scale
    for drift, so R = 1 if retained performance is unchanged and 0 otherwise.
    """
    pf0, pf, pr0, pr = map(float, (perf_forget_before, perf_forget_after, perf_retain_before, perf_retain_after))
    f = min(max((pf0 - pf) / pf0, 0.0), 1.0) if pf0 > 0 else 0.0
    r = min(max(1.0 - abs(pr0 - pr) / pr0, 0.0), 1.0) if pr0 > 0 else float(pr == pr0)
    score = 2 * f * r / (f + r) if f + r > 0 else 0.0
    return {"UES": score, "F": f, "R": r}


# ----------------------------------------------------------------------------------- membership inference
MIA_FOLDS = 5  # the attack's cross-fitting folds


def matched_members(member_groups, nonmember_groups, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of as many members as non-members within each group (person), drawn with ``rng``: the attack's
    balanced training set, one of like with like."""
    member_groups, nonmember_groups = np.asarray(member_groups), np.asarray(nonmember_groups)
    keep_m, keep_n = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
    for group in np.intersect1d(member_groups, nonmember_groups):
        m, h = np.flatnonzero(member_groups == group), np.flatnonzero(nonmember_groups == group)
        n = min(len(m), len(h))
        keep_m.append(rng.choice(m, n, replace=False))
        keep_n.append(rng.choice(h, n, replace=False))
    return np.sort(np.concatenate(keep_m)), np.sort(np.concatenate(keep_n))


def membership_inference(member_features, nonmember_features, target_features, seed: int = 0,
                         folds: int = MIA_FOLDS, member_groups=None, nonmember_groups=None,
                         target_groups=None) -> dict[str, float]:
    """Train a logistic-regression attack (members = 1, non-members = 0) and apply it to the targets.

    Members and non-members are first balanced (seeded subsampling of the larger side), and every score is
    cross-fitted: the attack is trained ``folds`` times, each sample is scored by the fold's attack that did
    not see it, each target by the attack of a seeded random fold. So every member, non-member and target is
    scored by an attack of the same kind that never trained on it. ``attack_acc``, ``attack_auc`` and
    ``attack_fpr`` (share of non-members called members) are out of fold. ``membership_recall``: share of
    targets called members (compare it with ``attack_fpr``: a recall at the false-positive rate says nothing).
    ``forget_auc``: AUC of the targets' scores against the non-members' (0.5: the targets look like images the
    model never trained on).

    ``*_groups`` (the identity of each sample) make the comparison one of like with like. Face sets have
    people with 5 images and people with 500, and a random forget draw comes mostly from the large ones while
    held-out images are a few per person: features such as the cosine to one's own identity centroid then
    tell the groups apart, not membership (an oracle that never saw the forget images scored 0.72 on LFW).
    With groups, members and non-members are balanced within each identity, and the non-members are weighted
    in ``forget_auc`` so that their identities are in the targets' proportions; targets of identities with no
    non-member are left out (in the identity protocol, where the forgotten people have no retained held-out
    image, ``forget_auc`` is NaN: there is no like to compare with).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def as_2d(a):
        a = _numpy(a, np.float64)
        return a.reshape(len(a), -1)

    def as_1d(a, n, what):
        if a is None:
            return np.zeros(n, dtype=np.int64)
        a = _numpy(a).reshape(-1)
        if len(a) != n:
            raise ValueError(f"{what}: {len(a)} groups for {n} samples")
        return a

    members, nonmembers, targets = as_2d(member_features), as_2d(nonmember_features), as_2d(target_features)
    given = [g is not None for g in (member_groups, nonmember_groups, target_groups)]
    if any(given) and not all(given):
        raise ValueError("give the groups of members, non-members and targets, or none")
    member_g = as_1d(member_groups, len(members), "members")
    nonmember_g = as_1d(nonmember_groups, len(nonmembers), "non-members")
    target_g = as_1d(target_groups, len(targets), "targets")

    rng = np.random.default_rng(seed)
    keep_m, keep_n = matched_members(member_g, nonmember_g, rng)  # one group (everything) without groups
    n = len(keep_m)
    if n < folds:
        raise ValueError(f"membership inference needs >= {folds} members and non-members of the same people, got "
                         f"{n} of {len(members)} members and {len(nonmembers)} non-members")
    x = np.concatenate([members[keep_m], nonmembers[keep_n]])
    y = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    scores = np.empty(len(y))
    target_scores = np.empty(len(targets))
    target_fold = rng.integers(folds, size=len(targets))  # each target scored by a random fold's attack
    for fold, (train, test) in enumerate(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y)):
        attack = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(x[train], y[train])
        scores[test] = attack.predict_proba(x[test])[:, 1]
        if (target_fold == fold).any():
            target_scores[target_fold == fold] = attack.predict_proba(targets[target_fold == fold])[:, 1]
    called = scores > 0.5
    nan = float("nan")
    recall, forget_auc = nan, nan
    if len(targets):
        recall = float(np.mean(target_scores > 0.5))
        heldout_scores, heldout_g = scores[y == 0], nonmember_g[keep_n]
        groups, target_count = np.unique(target_g, return_counts=True)
        heldout_count = dict(zip(*np.unique(heldout_g, return_counts=True)))
        share = {g: c / heldout_count[g] for g, c in zip(groups, target_count) if g in heldout_count}
        compared = np.array([g in share for g in target_g])
        weights = np.array([share.get(g, 0.0) for g in heldout_g])
        if compared.any():
            forget_auc = float(roc_auc_score(
                np.r_[np.ones(int(compared.sum())), np.zeros(len(heldout_scores))],
                np.r_[target_scores[compared], heldout_scores], sample_weight=np.r_[np.ones(int(compared.sum())), weights]))
    return {"membership_recall": recall, "attack_acc": float(np.mean(called == y)),
            "attack_auc": float(roc_auc_score(y, scores)), "attack_fpr": float(np.mean(called[y == 0])),
            "forget_auc": forget_auc}


def mia_features(embeddings, labels, reference_embeddings, reference_labels, ids=None, reference_ids=None,
                 seed: int = 0, chunk_size: int = 4096) -> np.ndarray:
    """Per-sample attack features (SPEC §3) against a reference set (the *retain* training embeddings, never a
    forget image), an (n, 3) float array:

    0. cosine to the nearest reference embedding;
    1. cosine to its label's leave-one-out centroid (normalised sum of the reference embeddings of that label);
    2. margin between the highest and second-highest cosine to all label centroids (its own the one of 1.).

    Each sample is compared with the reference set less one image, so that members and non-members drawn from
    one distribution get features of one distribution (a member must not find itself, in its neighbours or
    in its centroid): a member (its id in ``reference_ids``) leaves itself out; any other sample leaves out
    one seeded random reference image of its own label. A label absent from the reference (a forgotten
    person in the identity protocol) uses the leave-one-out centroid of that label among ``embeddings``.
    """
    from unlearnkit.metrics.search import knn

    x = _embeddings(embeddings).cpu()
    r = _embeddings(reference_embeddings).cpu()
    if (ids is None) != (reference_ids is None):
        raise ValueError("give both ids and reference_ids (to leave members out) or neither")
    labels_np = _numpy(labels).reshape(-1)
    ref_np = _numpy(reference_labels).reshape(-1)
    if len(labels_np) != len(x) or len(ref_np) != len(r):
        raise ValueError("one label per embedding is needed for both the samples and the reference set")
    if len(r) < 2:
        raise ValueError(f"membership features need >= 2 reference embeddings, got {len(r)}")

    names = np.unique(np.concatenate([ref_np, labels_np]))
    ref_codes = torch.from_numpy(np.searchsorted(names, ref_np))
    codes = torch.from_numpy(np.searchsorted(names, labels_np))
    counts = torch.bincount(ref_codes, minlength=len(names))

    # the reference image each sample leaves out (-1: none, for a label absent from the reference)
    left_out = torch.full((len(x),), -1, dtype=torch.long)
    if ids is not None:
        position = {int(i): p for p, i in enumerate(torch.as_tensor(reference_ids).reshape(-1).tolist())}
        own = [position.get(int(i), -1) for i in torch.as_tensor(ids).reshape(-1).tolist()]
        left_out = torch.tensor(own, dtype=torch.long).reshape(-1)
    by_label = torch.sort(ref_codes, stable=True).indices
    starts = torch.cumsum(counts, 0) - counts
    draw = (left_out < 0) & (counts[codes] > 0)
    u = torch.from_numpy(np.random.default_rng([seed, 13]).random(len(x)))
    pick = starts[codes] + (u * counts[codes]).long().clamp(max=(counts[codes] - 1).clamp(min=0))
    left_out = torch.where(draw, by_label[pick.clamp(max=len(r) - 1)], left_out)

    # 0. nearest reference embedding other than the left-out one (which is at most one of the best two)
    scores, index = knn(x, r, 2, chunk_size=chunk_size)
    skip = index[:, 0] == left_out
    nearest = torch.where(skip, scores[:, 1], scores[:, 0])

    # 1. leave-one-out centroid of the own label
    sums = torch.zeros(len(names), x.shape[1]).index_add_(0, ref_codes, r)
    own_sum = sums[codes] - torch.where((left_out >= 0).unsqueeze(1), r[left_out.clamp(min=0)],
                                        torch.zeros_like(x))
    absent = counts[codes] == 0
    if absent.any():  # labels never in the reference: leave-one-out among the samples of that label
        sample_sums = torch.zeros(len(names), x.shape[1]).index_add_(0, codes, x)
        own_sum = torch.where(absent.unsqueeze(1), sample_sums[codes] - x, own_sum)
    own_cos = (x * F.normalize(own_sum, dim=1)).sum(1)

    # 2. top-1 minus top-2 cosine over the reference labels' centroids, the own label's left-one-out
    present = (counts > 0).nonzero().squeeze(1)
    column = torch.full((len(names),), -1, dtype=torch.long)
    column[present] = torch.arange(len(present))
    to_centroids = torch.cat([x @ F.normalize(sums[present], dim=1).T,
                              torch.full((len(x), 1), -math.inf)], 1)
    rows = torch.arange(len(x))
    to_centroids[rows, torch.where(absent, len(present), column[codes])] = own_cos
    top = to_centroids.topk(min(2, to_centroids.shape[1]), dim=1).values
    margin = top[:, 0] - top[:, 1] if top.shape[1] == 2 else torch.zeros(len(x))
    margin = torch.where(torch.isfinite(margin), margin, torch.zeros_like(margin))
    return torch.stack([nearest, own_cos, margin], 1).numpy().astype(np.float64)
