"""The study's paired statistics: t-intervals equal to the textbook's and scipy's, the three-way verdict, and the
front's reading at a bounded retain drop."""

from __future__ import annotations

import math

import pytest

from unlearnkit.stats import FAILS, HOLDS, INCONCLUSIVE, all_of, any_of, best_within, paired_interval, verdict


def test_paired_interval_is_the_textbook_t_interval():
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.302652729911275 (tables), half-width 4.3027 / √3
    iv = paired_interval([2.0, 4.0, 6.0], [1.0, 2.0, 3.0])
    assert iv.differences == (1.0, 2.0, 3.0) and iv.mean == 2.0
    half = 4.302652729911275 / math.sqrt(3)
    assert (iv.low, iv.high) == pytest.approx((2 - half, 2 + half), abs=1e-9)
    # the 90 % interval of differences 0.5, 1.5 (t(0.95, 1) = 6.313751514675)
    iv = paired_interval([1.5, 2.5], [1.0, 1.0], confidence=0.9)
    assert (iv.low, iv.high) == pytest.approx((1 - 6.313751514675 * 0.5, 1 + 6.313751514675 * 0.5), abs=1e-9)


def test_paired_interval_matches_scipys_paired_t_test():
    stats = pytest.importorskip("scipy.stats")
    a, b = [0.61, 0.55, 0.70, 0.66, 0.58], [0.72, 0.60, 0.69, 0.80, 0.71]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    iv = paired_interval(a, b)
    assert (iv.low, iv.high) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_paired_interval_drops_nan_pairs_and_one_seed_has_no_interval():
    iv = paired_interval([1.0, math.nan, 3.0], [0.0, 0.0, math.nan])
    assert iv.differences == (1.0,) and (iv.low, iv.high) == (-math.inf, math.inf)
    assert verdict(iv) == INCONCLUSIVE  # one seed decides nothing
    assert verdict(paired_interval([math.nan], [1.0])) == INCONCLUSIVE
    with pytest.raises(ValueError, match="one of each per seed"):
        paired_interval([1.0], [1.0, 2.0])


def test_verdict_holds_fails_or_is_inconclusive():
    clear = paired_interval([0.9, 0.8, 0.85], [0.5, 0.45, 0.5])  # a above b on every seed, tight interval
    assert verdict(clear) == HOLDS and verdict(clear, better="lower") == FAILS
    assert verdict(clear, threshold=1.0) == FAILS  # beyond a threshold the difference never reaches
    wide = paired_interval([0.9, 0.5, 0.95], [0.5, 0.45, 0.2])  # every seed agrees, the interval straddles 0
    assert wide.low < 0 < min(wide.differences) and verdict(wide) == INCONCLUSIVE
    split = paired_interval([0.6, 0.4, 0.6], [0.5, 0.5, 0.5])  # seeds disagree
    assert verdict(split) == INCONCLUSIVE and verdict(split, better="lower") == INCONCLUSIVE
    assert all_of([HOLDS, HOLDS]) == HOLDS and all_of([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([HOLDS, FAILS, INCONCLUSIVE]) == FAILS and all_of([]) == INCONCLUSIVE
    assert any_of([FAILS, HOLDS]) == HOLDS and any_of([FAILS, FAILS]) == FAILS
    assert any_of([FAILS, INCONCLUSIVE]) == INCONCLUSIVE


def test_best_within_reads_the_front_at_the_bound():
    # θ0 at drop 0 (forget 0.9), settings at drops 0.01 (0.7) and 0.05 (0.1): at 0.02 the segment gives 0.55
    assert best_within([0.0, 0.01, 0.05], [0.9, 0.7, 0.1]) == pytest.approx(0.55)
    assert best_within([0.05, 0.0, 0.01], [0.1, 0.9, 0.7], bound=0.05) == pytest.approx(0.1)  # order-free
    # a front that never reaches the bound: its strongest point; a lower point inside the bound wins
    assert best_within([0.0, 0.005], [0.9, 0.8]) == pytest.approx(0.8)
    assert best_within([0.0, 0.01, 0.03], [0.9, 0.4, 0.6]) == pytest.approx(0.4)
    assert math.isnan(best_within([0.03, 0.1], [0.5, 0.2]))  # every setting costs more than 2 points
    assert best_within([-0.01, 0.04], [0.8, 0.2]) == pytest.approx(0.44)  # retain may improve (negative drop)
