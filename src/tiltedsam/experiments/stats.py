r"""Paired comparisons over seeds: the mean difference, its 95% confidence interval, a p-value.

Runs of two methods with the same seed share the data (subset, label noise, split), the
initialisation and the data order, so the per-seed differences :math:`d_i = a_i - b_i` remove
what the seeds share.  With :math:`\bar d`, the sample standard deviation :math:`s_d` and
:math:`n` seeds, the interval is :math:`\bar d \pm t_{0.975, n-1}\, s_d/\sqrt n` and the p-value
is the two-sided paired t-test's (``scipy.stats.ttest_rel``): it is below 0.05 exactly when the
interval excludes 0.

When every seed moved by exactly the same amount :math:`d \ne 0` (:math:`s_d = 0`) the t-test is
undefined (an infinite statistic, not evidence).  The test is then the exact two-sided sign test,
:math:`p = 2^{1-n}`, and the interval the distribution-free one between the smallest and largest
difference, :math:`[d, d]`, whose coverage is :math:`1 - 2^{1-n}`: reported only when that reaches
the confidence asked for (:math:`n \ge 6` at 95%); below it there is no interval at that level
(bounds :math:`\pm\infty`, "not significant").
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats


@dataclass(frozen=True)
class PairedDifference:
    """``mean`` of a − b over ``n`` paired seeds with its ``low``..``high`` confidence interval."""

    n: int
    mean: float
    low: float
    high: float
    p_value: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0 (two-sided test at 1 − confidence)."""
        return self.low > 0 or self.high < 0

    def interval(self, scale: float = 100.0) -> str:
        """``[+0.40, +2.06]``, or why there is none (one pair; too few equal differences)."""
        if self.n < 2:
            return "(n = 1, no interval)"
        if math.isinf(self.low):
            return f"(all {self.n} differences equal: no interval)"
        return f"[{scale * self.low:+.2f}, {scale * self.high:+.2f}]"

    def describe(self, scale: float = 100.0, unit: str = " pts") -> str:
        """``+1.23 pts [+0.40, +2.06], p = 0.012`` (or ``..., not significant``)."""
        verdict = f"p = {self.p_value:.2g}" if self.significant else "not significant"
        if self.n < 2:
            return f"{scale * self.mean:+.2f}{unit} {self.interval(scale)}"
        return f"{scale * self.mean:+.2f}{unit} {self.interval(scale)}, {verdict}"


def paired_difference(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``a[i] - b[i]``, its t-interval and the paired t-test's two-sided p-value."""
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_difference needs at least one pair")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n, mean = len(diffs), statistics.fmean(diffs)
    if n == 1:
        return PairedDifference(1, mean, -math.inf, math.inf, math.nan)
    sd = statistics.stdev(diffs)
    # Equal up to rounding (0.697 - 0.687 and 0.888 - 0.878 differ in the last bits): the sign
    # test (module docstring), not a t statistic of 1e15.
    if sd <= 1e-9 * max(abs(d) for d in diffs):
        if mean == 0:
            return PairedDifference(n, mean, 0.0, 0.0, 1.0)
        p = min(1.0, 2.0 ** (1 - n))
        if p <= 1 - confidence:
            return PairedDifference(n, mean, mean, mean, p)
        return PairedDifference(n, mean, -math.inf, math.inf, p)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedDifference(n, mean, mean - half, mean + half, p)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of its t-interval); half-width 0 for one value."""
    n, mean = len(values), statistics.fmean(values)
    if n < 2:
        return mean, 0.0
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)


EXACT_UP_TO = 9  # n! = 362,880 orderings at most: enumerated, not sampled


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float] | None:
    r"""Spearman's :math:`\rho` of ``x`` and ``y`` (Pearson's correlation of their average
    ranks, ties sharing their mean rank) and its two-sided p-value; None if either is constant.

    For :math:`n \le 9` the p-value is exact: the share of the :math:`n!` orderings of ``y``'s
    ranks whose :math:`|\rho|` reaches the observed one (with 3 points in perfect order it is
    1/3, where the t approximation says 0).  Beyond, ``scipy.stats.spearmanr``'s."""
    import itertools

    import numpy as np

    rx, ry = stats.rankdata(x), stats.rankdata(y)
    if len(rx) != len(ry):
        raise ValueError(f"spearman: x and y differ in length ({len(rx)} and {len(ry)})")
    if len(rx) < 3 or np.ptp(rx) == 0 or np.ptp(ry) == 0:
        return None
    found = stats.spearmanr(x, y)
    rho = float(found.statistic)
    if len(rx) > EXACT_UP_TO:
        return rho, float(found.pvalue)
    cx = (rx - rx.mean()) / np.linalg.norm(rx - rx.mean())
    perms = np.array(list(itertools.permutations(range(len(ry)))), dtype=np.intp)
    cy = ry[perms] - ry.mean()
    r = cy @ cx / np.linalg.norm(cy, axis=1)
    return rho, float(np.mean(np.abs(r) >= abs(rho) - 1e-12))
