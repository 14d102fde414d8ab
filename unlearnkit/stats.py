"""Paired statistics for the study's claims: per-seed differences, a t-interval, and a three-way verdict.

A claim compares two methods (or a method and θ0) on the same seeds, so the seeds pair the values: the
difference per seed carries the comparison, and its mean gets a Student-t interval over the seeds. A claim
**holds** only when the whole interval lies on the claimed side of the decision threshold and every seed agrees,
**fails** when the whole interval lies on the other side and every seed agrees, and is **inconclusive**
otherwise (too few seeds, an interval straddling the threshold, seeds that disagree): a 0.01 difference on
one seed is not a result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"


@dataclass(frozen=True)
class PairedInterval:
    """``a − b`` per seed (pairs with a NaN dropped), their mean and its ``confidence`` t-interval [low, high]
    (infinite with fewer than two pairs: one seed gives no spread)."""

    differences: tuple[float, ...]
    mean: float
    low: float
    high: float
    confidence: float

    @property
    def n(self) -> int:
        return len(self.differences)

    def __str__(self) -> str:
        if not self.n:
            return "no paired values"
        return (f"Δ {self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}] ({self.confidence:.0%}, n={self.n}; "
                f"per seed {', '.join(f'{d:+.3f}' for d in self.differences)})")


def t_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile of Student's t with ``dof`` degrees of freedom (scipy's)."""
    from scipy.stats import t

    return float(t.ppf(probability, dof))


def paired_interval(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> PairedInterval:
    """The mean of ``a[i] − b[i]`` over seeds with its two-sided ``confidence`` Student-t interval."""
    if len(a) != len(b):
        raise ValueError(f"paired values need one of each per seed, got {len(a)} and {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diffs = tuple(float(x) - float(y) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y)))
    if not diffs:
        return PairedInterval((), math.nan, -math.inf, math.inf, confidence)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedInterval(diffs, mean, -math.inf, math.inf, confidence)
    half = t_quantile((1 + confidence) / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedInterval(diffs, mean, mean - half, mean + half, confidence)


def verdict(interval: PairedInterval, threshold: float = 0.0, better: str = "higher") -> str:
    """Does ``a − b`` lie beyond ``threshold`` on the ``better`` side (``higher``: a − b > threshold; ``lower``:
    a − b < threshold)? holds / fails only when the interval and every seed agree, else inconclusive."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")
    sign = 1.0 if better == "higher" else -1.0
    low, high = sorted((sign * (interval.low - threshold), sign * (interval.high - threshold)))
    above = [sign * (d - threshold) > 0 for d in interval.differences]
    if interval.n and low > 0 and all(above):
        return HOLDS
    if interval.n and high < 0 and not any(above):
        return FAILS
    return INCONCLUSIVE


def all_of(verdicts: Sequence[str]) -> str:
    """A claim made of several comparisons, each of which must hold: fails if one fails."""
    if any(v == FAILS for v in verdicts):
        return FAILS
    return HOLDS if verdicts and all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def any_of(verdicts: Sequence[str]) -> str:
    """A claim that one of several candidates meets: holds if one holds, fails if every one fails."""
    if any(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if verdicts and all(v == FAILS for v in verdicts) else INCONCLUSIVE


def best_within(drops: Sequence[float], values: Sequence[float], bound: float = 0.02) -> float:
    """The lowest value a front reaches at a cost ``drop ≤ bound``: the front is the piecewise-linear curve through
    its points ordered by drop, so the answer is its lowest point within the bound or its value interpolated
    at the bound. NaN where every point costs more than ``bound``. Used for forget mAP at a retain drop of 2
    points; a front that includes θ0 (drop 0) is always defined there."""
    points = sorted((float(d), float(v)) for d, v in zip(drops, values) if not (math.isnan(d) or math.isnan(v)))
    inside = [v for d, v in points if d <= bound]
    if not inside:
        return math.nan
    for (d0, v0), (d1, v1) in zip(points, points[1:]):
        if d0 <= bound < d1:  # the segment that crosses the bound
            inside.append(v0 + (v1 - v0) * (bound - d0) / (d1 - d0))
    return min(inside)
