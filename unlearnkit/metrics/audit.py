"""The per-example privacy audit of SPEC §3: unlearned models against retrained ones, example by example.

- ``example_statistic``: what each model says about each forget example, from embeddings only (so θ0, the
  oracle and every unlearned model are comparable whatever their heads): the cosine of the example to the
  leave-one-out centroid of its identity's other evaluation images, logit-scaled ``log((1+c)/(1-c))`` so its
  range is that of the challenge's logit-scaled confidences.
- ``forget_epsilons`` / ``forget_score``: the NeurIPS 2023 Machine Unlearning Challenge's forget score
  (google-deepmind/unlearning_evaluation, ``metric.py``), re-implemented from its semantics: per example, the
  (ε, δ = 1e-5) estimate from its single- and double-threshold decision rules, then buckets of width 0.5 up
  to ⌈ln(N−1)⌉ whose points halve, averaged over the examples. Thresholds are built in the input's precision
  and compared as the organisers' code does, so the two agree on any input. Where their code cannot run as
  written (``assert`` on a numpy array; ``.cuda()`` everywhere) we follow its evident intent: an example
  whose every threshold is discarded raises, and everything runs on the CPU.
- ``final_score``: F × (RA_u / RA_r) × (TA_u / TA_r).
- ``ulira``: a U-LiRA-style test (Hayes et al. 2025): per example, Gaussians fitted to the statistic under
  the retrained and under the unlearned models with the scored model left out; the likelihood ratio of each
  held-out model; AUC and TPR at FPR 1 % and 0.1 % of telling unlearned from retrained models.
- ``one_model_test``: one model at a time (θ0, which is a single model, or each unlearning run) against the
  retrained models' Gaussian per example: the offline form of the same test.
- ``table_markdown``: the audit's table from its ``audit.json`` (θ0, each method with its noise control, the
  retrained oracles), for ``audit.md`` and ``unlearnkit report``.
- ``ks_forget_quality``: the p-value of the two-sample KS test between a run's and the oracle's statistics
  (open-unlearning's ``forget_quality``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["example_statistic", "logit_scaled", "forget_epsilons", "forget_score", "final_score", "ulira",
           "one_model_test", "ks_forget_quality", "resolvable_epsilon"]

DELTA = 1e-5
EPSILON_CAP = 50.0
THRESHOLDS_PER_UNIT = 100
BUFFER = 2.0  # the double-threshold rule's search margin around the peakier distribution
BUCKET = 0.5


# ------------------------------------------------------------------------------------- the statistic
def logit_scaled(cosine, eps: float = 1e-6) -> torch.Tensor:
    """``log((1 + c) / (1 − c))``, with c clipped to (−1 + eps, 1 − eps)."""
    c = torch.as_tensor(cosine, dtype=torch.float64).clamp(-1 + eps, 1 - eps)
    return torch.log1p(c) - torch.log1p(-c)


def example_statistic(embeddings, labels, which) -> torch.Tensor:
    """The logit-scaled cosine of each example in ``which`` (a mask or indices) to the leave-one-out centroid
    of the other evaluation images of its identity (NaN where it has none)."""
    z = F.normalize(torch.as_tensor(embeddings).detach().double().cpu(), dim=1)
    _, codes = np.unique(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels),
                         return_inverse=True)
    codes = torch.from_numpy(codes.reshape(-1).astype(np.int64))
    sums = torch.zeros(int(codes.max()) + 1, z.shape[1], dtype=z.dtype).index_add_(0, codes, z)
    counts = torch.bincount(codes, minlength=sums.shape[0])
    idx = torch.as_tensor(which)
    idx = idx.nonzero().squeeze(1) if idx.dtype == torch.bool else idx.long()
    others = sums[codes[idx]] - z[idx]
    cos = (F.normalize(others, dim=1) * z[idx]).sum(1)
    return torch.where(counts[codes[idx]] > 1, logit_scaled(cos), torch.full_like(cos, math.nan))


# ----------------------------------------------------------------------------------- the forget score
def _positive_counts(sorted_confs: np.ndarray, left, right) -> np.ndarray:
    """How many confidences c satisfy left ≤ c ≤ right, for arrays of (left, right) bounds."""
    inside = np.searchsorted(sorted_confs, right, side="right") - np.searchsorted(sorted_confs, left, side="left")
    return np.maximum(inside, 0)


def _double_threshold_rates(pos: np.ndarray, neg: np.ndarray):
    """(tpr, fnr, fpr, tnr) of every rule "predict positive between a left and a right threshold", positive
    being the peakier distribution (the smaller range), thresholds on a grid around it (in the input's
    precision, as the organisers build them)."""
    pos_range, neg_range = pos.max() - pos.min(), neg.max() - neg.min()
    width = neg_range if pos_range > neg_range else pos_range
    if pos_range >= neg_range:
        pos, neg = neg, pos
    lo = pos.min() + width - pos.dtype.type(BUFFER)
    hi = pos.max() + pos.dtype.type(BUFFER)
    right = np.linspace(lo, hi, num=int(np.ceil((hi - lo) * THRESHOLDS_PER_UNIT)))
    n_left = int(np.ceil(2 * BUFFER * THRESHOLDS_PER_UNIT))
    left = np.concatenate([np.linspace(r - width - BUFFER, r - width + BUFFER, num=n_left) for r in right])
    right = np.repeat(right, n_left)
    pp_pos = _positive_counts(np.sort(pos), left, right)
    pp_neg = _positive_counts(np.sort(neg), left, right)
    return _rates(pp_pos, pp_neg, len(pos))


def _single_threshold_rates(pos: np.ndarray, neg: np.ndarray):
    """(tpr, fnr, fpr, tnr) of every rule "predict positive at or above a threshold" (the organisers' grid:
    ``torch.linspace`` from the smallest to the largest value, 100 per unit)."""
    both = torch.from_numpy(np.concatenate([pos, neg]))
    lo, hi = both.min(), both.max()
    thresholds = torch.linspace(lo, hi, int(torch.ceil((hi - lo) * THRESHOLDS_PER_UNIT))).numpy()
    # compared in the wider of the two precisions, as torch promotes them
    wide = np.promote_types(thresholds.dtype, pos.dtype)
    t = thresholds.astype(wide)
    at_or_above = lambda x: len(x) - np.searchsorted(np.sort(x.astype(wide)), t, side="left")  # noqa: E731
    return _rates(at_or_above(pos), at_or_above(neg), len(pos))


def _rates(pp_pos: np.ndarray, pp_neg: np.ndarray, n: int):
    """Rates as float32 means over the models, as the organisers' ``torch.mean`` of float32 indicators."""
    n32 = np.float32(n)
    tpr = pp_pos.astype(np.float32) / n32
    fpr = pp_neg.astype(np.float32) / n32
    return tpr, (n - pp_pos).astype(np.float32) / n32, fpr, (n - pp_neg).astype(np.float32) / n32


def _example_epsilon(pos: np.ndarray, neg: np.ndarray, delta: float) -> float:
    pos_range, neg_range = pos.max() - pos.min(), neg.max() - neg.min()
    largest, smallest = max(pos_range, neg_range), min(pos_range, neg_range)
    with np.errstate(divide="ignore", invalid="ignore"):
        if smallest / largest < 0.01:  # a very peaky distribution: the worst ε, as the organisers decide
            return EPSILON_CAP
    rates = [np.concatenate(parts) for parts in zip(_double_threshold_rates(pos, neg),
                                                    _single_threshold_rates(pos, neg))]
    tpr, fnr, fpr, tnr = rates
    separated = (fpr + fnr == 0) & (tpr + tnr == 2)  # perfect separation: ε = ∞
    usable = (fpr * fnr != 0) | separated  # a rule with FPR or FNR 0 (and not both) is discarded
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: rules discarded just below
        eps = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr),
                                 np.log(1 - delta - fnr) - np.log(fpr)], axis=0), 0, None)
    eps = np.where(separated, np.inf, eps)[usable]
    eps = eps[~np.isnan(eps)]
    if eps.size == 0:  # the organisers' `assert thr_eps` (on an array, which cannot run): its intent
        raise ValueError("every decision threshold gave an undefined ε for an example: are both sets of models "
                         "constant on it?")
    return float(min(eps.max(), EPSILON_CAP))


def forget_epsilons(unlearned, retrained, delta: float = DELTA) -> np.ndarray:
    """Per forget example, the ε the challenge's decision rules reach between the two ``[models × examples]``
    matrices of per-example statistics (positive class: the side with the larger median)."""
    u, r = np.asarray(unlearned), np.asarray(retrained)
    if u.ndim != 2 or u.shape != r.shape:
        raise ValueError(f"unlearned {u.shape} and retrained {r.shape} must be [models × examples] of one shape")
    if u.shape[0] < 2:
        raise ValueError(f"the forget score needs at least 2 models per side, got {u.shape[0]}")
    retrain_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_positive, r, u)
    neg = np.where(retrain_positive, u, r)
    return np.array([_example_epsilon(pos[:, i], neg[:, i], delta) for i in range(u.shape[1])])


def resolvable_epsilon(num_models: int) -> float:
    """⌈ln(N − 1)⌉: the largest ε N models per side can tell apart; the score's buckets stop there."""
    return float(np.ceil(np.log(num_models - 1)))


def score_of_epsilons(eps, num_models: int) -> float:
    """Buckets of width 0.5 from 0 up to ``resolvable_epsilon``, worth 1, 1/2, 1/4, …; averaged over examples
    (an ε past the last bucket scores 0)."""
    top = resolvable_epsilon(num_models)
    starts = np.arange(0.0, top, BUCKET)
    starts = starts[starts + BUCKET <= top]
    eps = np.asarray(eps, dtype=float)
    bucket = np.searchsorted(starts + BUCKET, eps, side="right")  # first bucket with eps < its end
    points = np.where(bucket < len(starts), 0.5 ** bucket.astype(float), 0.0)
    return float(points.sum() / len(eps))


def forget_score(unlearned, retrained) -> float:
    """The NeurIPS 2023 challenge's forget score F from two ``[models × forget examples]`` matrices."""
    return score_of_epsilons(forget_epsilons(unlearned, retrained), np.asarray(unlearned).shape[0])


def final_score(forget: float, retain_unlearned: float, retain_retrained: float, test_unlearned: float,
                test_retrained: float) -> float:
    """The challenge's final score F × (RA_u / RA_r) × (TA_u / TA_r)."""
    return forget * (retain_unlearned / retain_retrained) * (test_unlearned / test_retrained)


# -------------------------------------------------------------------------------------- U-LiRA and KS
def _gaussian_logpdf(x, mean, std):
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)


def ulira(unlearned, retrained, fprs=(0.01, 0.001), curve: bool = False):
    """Tell unlearned from retrained models, example by example: for each model and example, Gaussians fitted
    to the example's statistic under the other unlearned and the other retrained models (the scored model left
    out), the log likelihood ratio; AUC and TPR at the given FPRs over all (model, example) scores, unlearned
    being the positive class. ``curve``: also return the ROC curve (fpr, tpr)."""
    u, r = np.asarray(unlearned, dtype=float), np.asarray(retrained, dtype=float)
    if u.shape[0] < 3 or r.shape[0] < 3:
        raise ValueError("U-LiRA needs at least 3 models per side (2 left after leaving one out)")

    def gaussian(mat, leave=None):
        """Per-example mean and std over the models of ``mat``, model ``leave`` left out."""
        kept = mat if leave is None else np.delete(mat, leave, axis=0)
        return kept.mean(0), kept.std(0, ddof=1) + 1e-6

    scores, truth = [], []
    for own, other, label in ((u, r, 1), (r, u, 0)):
        fit_other = gaussian(other)
        for m in range(own.shape[0]):
            # log p(x | unlearned) − log p(x | retrained), the scored model out of its own side's fit
            own_ll = _gaussian_logpdf(own[m], *gaussian(own, m))
            other_ll = _gaussian_logpdf(own[m], *fit_other)
            scores.append(own_ll - other_ll if label else other_ll - own_ll)
            truth.append(np.full(own.shape[1], label))
    out, roc = _roc_summary(np.concatenate(scores), np.concatenate(truth), fprs)
    return (out, roc) if curve else out


def _roc_summary(scores: np.ndarray, truth: np.ndarray, fprs) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """AUC and TPR at each FPR in ``fprs`` of ``scores`` (higher = positive) against ``truth`` (1 = positive),
    non-finite scores left out; and the ROC curve."""
    from sklearn.metrics import roc_auc_score, roc_curve

    keep = np.isfinite(scores)
    s, t = scores[keep], truth[keep]
    fpr, tpr, _ = roc_curve(t, s)
    out = {"auc": float(roc_auc_score(t, s))}
    for limit in fprs:
        out[f"tpr@fpr={limit:g}"] = float(tpr[fpr <= limit].max()) if (fpr <= limit).any() else 0.0
    return out, (fpr, tpr)


def one_model_test(models, retrained, fprs=(0.01, 0.001)) -> dict[str, float]:
    """Each model alone against the retrained models (an offline, two-sided LiRA): per example, a Gaussian fitted
    to the statistic under the retrained models, N − 1 of them at a time (each left out once); every model of
    ``models`` (rows; θ0 is a single row) scored against each of those fits, and each retrained model against
    the fit it was left out of, by −log p (how unlike retraining its value is). AUC and TPR at the given FPRs
    of telling ``models`` from a retrained model, and ``median_z``: the median over examples of the models'
    mean (s − μ_r) / σ_r (> 0: above the retrained models, as a model that remembers; < 0: below)."""
    m = np.atleast_2d(np.asarray(models, dtype=float))
    r = np.asarray(retrained, dtype=float)
    if r.ndim != 2 or m.shape[1] != r.shape[1]:
        raise ValueError(f"models {m.shape} and retrained {r.shape} must be [models × examples] over the same examples")
    if r.shape[0] < 3:
        raise ValueError("the one-model test needs at least 3 retrained models (2 left after leaving one out)")
    positives, negatives = [], []
    for k in range(r.shape[0]):
        kept = np.delete(r, k, axis=0)
        mean, std = kept.mean(0), kept.std(0, ddof=1) + 1e-6
        positives.append(-_gaussian_logpdf(m, mean, std).ravel())
        negatives.append(-_gaussian_logpdf(r[k], mean, std))
    pos, neg = np.concatenate(positives), np.concatenate(negatives)
    out, _ = _roc_summary(np.concatenate([pos, neg]),
                          np.concatenate([np.ones(len(pos), dtype=int), np.zeros(len(neg), dtype=int)]), fprs)
    z = (m.mean(0) - r.mean(0)) / (r.std(0, ddof=1) + 1e-6)
    out["median_z"] = float(np.nanmedian(z))
    return out


def ks_forget_quality(run_statistics, oracle_statistics) -> dict[str, float]:
    """The two-sample KS test between a run's and the oracle's per-example statistics on D_f: its p-value
    (high = indistinguishable from the oracle) and statistic."""
    from scipy.stats import ks_2samp

    a = np.asarray(run_statistics, dtype=float)
    b = np.asarray(oracle_statistics, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return {}
    result = ks_2samp(a, b)
    return {"p_value": float(result.pvalue), "statistic": float(result.statistic)}


# ------------------------------------------------------------------ the audit's table (audit.md and the report)
def fmt(value, digits: int = 3) -> str:
    """A figure for a table (``digits`` decimals), – where missing or not finite."""
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def table_rows(result: dict) -> list[tuple[str, dict]]:
    """(label, figures) of every row of the audit's table: θ0, each method followed by its noise control, the
    retrained oracles; figures keyed by ``TABLE`` columns."""
    rows = []
    theta0 = result.get("theta0")
    if theta0:
        rows.append(("**θ0** (original)", {"F": theta0["forget_score"], "RA": theta0["RA"], "TA": theta0["TA"],
                                           "one": theta0["one_model"]["auc"],
                                           "attack": theta0["population"].get("forget_auc"),
                                           "fpr": theta0["population"].get("attack_fpr")}))
    for method, m in result["methods"].items():
        name = f"{method} (label-free)" if m.get("label_free") else method
        rows.append((name, {"F": m["forget_score"], "final": m["final_score"], "RA": m["RA"], "TA": m["TA"],
                            "ulira": m["ulira_forget"]["auc"], "tpr": m["ulira_forget"]["tpr@fpr=0.01"],
                            "ulira_retain": m["ulira_retain"]["auc"], "one": m.get("one_model", {}).get("auc"),
                            # audits written before the one-model test and the attack figures have neither
                            "attack": m.get("population", {}).get("forget_auc"),
                            "fpr": m.get("population", {}).get("attack_fpr")}))
        noise = result.get("noise", {}).get(method)
        if noise:
            rows.append((f"↳ noise at its drift ({m['drift']:.3f})",
                         {"F": noise["forget_score"], "ulira": noise["ulira_forget"]["auc"],
                          "tpr": noise["ulira_forget"]["tpr@fpr=0.01"], "ulira_retain": noise["ulira_retain"]["auc"],
                          "one": noise["one_model"]["auc"]}))
    retrained = result["retrained"]
    rows.append(("**retrained oracles**", {"RA": retrained["RA"], "TA": retrained["TA"],
                                           "attack": retrained.get("population", {}).get("forget_auc"),
                                           "fpr": retrained.get("population", {}).get("attack_fpr")}))
    return rows


TABLE = [("F", "forget score F ↑"), ("final", "final score ↑"), ("RA", "RA"), ("TA", "TA"),
         ("ulira", "U-LiRA AUC (forget) ↓"), ("tpr", "TPR@1%"), ("ulira_retain", "U-LiRA AUC (retain) ↓"),
         ("one", "one-model AUC ↓"), ("attack", "attack forget AUC"), ("fpr", "attack FPR")]


def table_markdown(result: dict) -> list[str]:
    """The audit's table (``audit.json``'s content) as Markdown lines: θ0, each method and its noise control, the
    retrained oracles."""
    lines = ["| model | " + " | ".join(title for _, title in TABLE) + " |", "|---|" + "---:|" * len(TABLE)]
    for label, figures in table_rows(result):
        lines.append(f"| {label} | " + " | ".join(fmt(figures.get(key)) for key, _ in TABLE) + " |")
    return lines
