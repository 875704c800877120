"""Paired differences: the interval inverts the test, covers at its level, and degenerates
cleanly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tiltedsam.experiments.stats import mean_interval, paired_difference


def test_interval_ends_are_where_the_one_sample_test_has_p_equal_005():
    a = [0.91, 0.93, 0.90, 0.95, 0.92]
    b = [0.90, 0.90, 0.91, 0.92, 0.90]
    diff = paired_difference(a, b)
    d = np.subtract(a, b)
    assert diff.mean == pytest.approx(d.mean())
    for end in (diff.low, diff.high):  # shifting the differences to an end gives p = 0.05
        assert scipy_stats.ttest_1samp(d - end, 0.0).pvalue == pytest.approx(0.05, rel=1e-6)
    assert diff.p_value == pytest.approx(scipy_stats.ttest_1samp(d, 0.0).pvalue)
    assert diff.significant == (diff.p_value < 0.05)


def test_interval_covers_the_true_difference_at_its_level():
    rng = np.random.default_rng(0)
    hits = 0
    trials = 4000
    for _ in range(trials):
        shared = rng.normal(size=5)  # what a seed does to both methods
        a = shared + 0.3 + rng.normal(scale=0.5, size=5)
        b = shared + rng.normal(scale=0.5, size=5)
        diff = paired_difference(list(a), list(b))
        hits += diff.low <= 0.3 <= diff.high
    assert abs(hits / trials - 0.95) < 0.012


def test_degenerate_inputs():
    one = paired_difference([1.0], [0.5])
    assert one.n == 1 and math.isinf(one.low) and "n = 1" in one.describe()
    zero = paired_difference([1.0, 2.0], [1.0, 2.0])
    assert (zero.low, zero.high, zero.p_value, zero.significant) == (0.0, 0.0, 1.0, False)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0], [1.0, 2.0])
    assert mean_interval([3.0]) == (3.0, 0.0)
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(scipy_stats.t.ppf(0.975, 2) * 1 / math.sqrt(3))


@pytest.mark.parametrize("n", [2, 5, 6, 8])
def test_equal_differences_fall_back_to_the_exact_sign_test(n):
    """s_d = 0 makes the t statistic infinite; the sign test's p is scipy's binomial test's, and
    the interval [d, d] exists only where its coverage 1 - 2^(1-n) reaches 95%."""
    a = [0.9 + 0.01 * i for i in range(n)]
    diff = paired_difference(a, [x - 0.5 for x in a])
    reference = scipy_stats.binomtest(n, n, 0.5).pvalue
    assert diff.p_value == pytest.approx(reference) and diff.mean == pytest.approx(0.5)
    assert diff.significant == (reference <= 0.05) == (n >= 6)
    if diff.significant:
        assert diff.low == diff.high == diff.mean and "p = " in diff.describe()
    else:
        assert "no interval" in diff.describe() and "not significant" in diff.describe()


def test_differences_equal_up_to_rounding_count_as_equal():
    """0.697 - 0.687 and 0.888 - 0.878 are 0.01 up to the last bits of a float: the sign test,
    as for exactly equal differences, never a t statistic of 1e15 (p = 1e-29)."""
    as_fractions = paired_difference([0.697, 0.888, 0.715], [0.687, 0.878, 0.705])
    as_counts = paired_difference([697, 888, 715], [687, 878, 705])
    assert as_fractions.p_value == as_counts.p_value == 0.25
    assert not as_fractions.significant and "no interval" in as_fractions.describe()
