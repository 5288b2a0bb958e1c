r"""Statistics of paired trials that hold for heavy tails and count every trial.

Per-trial time-averaged RMSEs of a filter are heavy-tailed: a few trials where the filter
nearly loses track dominate a mean, and a Student-t interval of a positive quantity can reach
below 0. So the harness uses rank statistics, which need no distribution of the tails:

* :func:`paired_difference`: the **Hodges–Lehmann** estimate of the paired difference
  :math:`\delta_i = a_i - b_i` (the median of the :math:`n(n+1)/2` Walsh averages
  :math:`(\delta_i + \delta_j)/2`, :math:`i \le j`) and the **Wilcoxon signed-rank**
  confidence interval :math:`[W_{(k)}, W_{(M + 1 - k)}]` of the sorted Walsh averages, with
  :math:`k - 1` the largest :math:`w` such that :math:`P(T^+ \le w) \le \alpha/2` under the
  exact null distribution of the signed-rank statistic :math:`T^+`. It is the set of shifts
  :math:`\delta_0` that the exact two-sided signed-rank test of :math:`\delta - \delta_0` does
  not reject (tested against ``scipy.stats.wilcoxon``). With :math:`n \le 5` no interval
  has 95% coverage and it is :math:`(-\infty, \infty)`.
* A **diverged** trial (a NaN or an infinite RMSE) is the worst possible: it ranks above every
  finite RMSE, so against a method that ran it is a loss, and two methods that both diverged
  in a trial tie there. Nothing is dropped; where an estimate or bound is decided by diverged
  trials it is :math:`\pm\infty`.
* The two-sided signed-rank **p-value** of :math:`\delta = 0` (``scipy.stats.wilcoxon``,
  exact where it can be), for :func:`holm`'s correction over a chapter's verdicts.
* :func:`mean_interval`: a method's mean RMSE with the percentile **bootstrap** interval
  (10,000 resamples, seeded, so a table is reproducible); it lies inside the data's range, so
  the interval of a positive quantity never reaches below 0.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np
from scipy import stats as _stats

#: resamples of :func:`mean_interval`'s bootstrap
N_RESAMPLES = 10_000


class Difference(NamedTuple):
    """Paired difference ``a - b`` over every trial (a diverged trial counts as a loss).

    Fields:
      estimate: Hodges–Lehmann estimate (the median of the Walsh averages); ``±inf`` when
        the diverged trials decide it.
      low, high: the Wilcoxon signed-rank confidence interval (level ``level``).
      n: trials (pairs); ``n_diverged``: trials where exactly one of the two diverged.
      p: two-sided signed-rank p-value of a zero difference (NaN for fewer than 2 pairs).
      level: the interval's confidence level.
    """

    estimate: float
    low: float
    high: float
    n: int
    p: float
    n_diverged: int = 0
    level: float = 0.95

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.n >= 2 and (self.high < 0 or self.low > 0)

    @property
    def close_call(self) -> bool:
        """The interval's distance from 0 is under its half-width: it holds 0 (distance 0),
        or it excludes 0 by less than half its own width, so that more trials could move the
        verdict. An interval with an infinite end (decided by diverged trials) is a close
        call only when it holds 0. Fewer than 2 trials: a close call."""
        if self.n < 2 or not self.significant:
            return True
        if not (np.isfinite(self.low) and np.isfinite(self.high)):
            return False
        return min(abs(self.low), abs(self.high)) < (self.high - self.low) / 2


#: the one-word verdicts of a paired difference "method minus reference" (lower is better)
OUTCOMES = ("better", "worse", "no significant difference")


def interval_outcome(low: float, high: float) -> str:
    """The verdict of a 95% interval of "method minus reference" read on its own (e.g. from
    a record): ``"better"`` when it lies below 0, ``"worse"`` above, ``"no significant
    difference"`` when it holds 0, ``"not comparable"`` when an end is NaN. The ends are
    numbers (``inf`` allowed); anything else is refused."""
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise ValueError(f"{name} must be a number, got {value!r}")
    low, high = float(low), float(high)
    if np.isnan(low) or np.isnan(high):
        return "not comparable"
    if low > high:
        raise ValueError(f"an interval needs low <= high, got [{low}, {high}]")
    return "better" if high < 0 else "worse" if low > 0 else "no significant difference"


@lru_cache(maxsize=64)
def _signed_rank_cdf(n: int) -> np.ndarray:
    r"""The exact null CDF of the signed-rank statistic :math:`T^+` for ``n`` pairs without
    ties: ``cdf[w] = P(T^+ <= w)``, ``w = 0 .. n(n+1)/2`` (counts of the subsets of ``1..n``
    with each sum, over :math:`2^n`)."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):  # add rank r to every subset so far
        counts[r:] = counts[r:] + counts[:-r].copy()
    return np.cumsum(counts) / 2.0**n


def _order_index(n: int, level: float) -> int | None:
    """``k`` (1-based) of the Walsh-average interval; None when no interval reaches ``level``."""
    alpha = 1.0 - level
    if n > 400:  # normal approximation of T+ (its exact CDF would need 2**n)
        mean, sd = n * (n + 1) / 4.0, np.sqrt(n * (n + 1) * (2 * n + 1) / 24.0)
        k = int(np.floor(mean - _stats.norm.ppf(1 - alpha / 2) * sd))
        return k if k >= 1 else None
    cdf = _signed_rank_cdf(n)
    below = np.nonzero(cdf <= alpha / 2 + 1e-12)[0]
    return int(below[-1]) + 1 if below.size else None


def _with_losses(delta: np.ndarray) -> tuple[np.ndarray, float]:
    """``delta`` with ±inf replaced by ±L, L beyond every finite Walsh average; returns the
    array and the largest finite ``|delta|`` (a Walsh average above it came from a loss)."""
    finite = np.isfinite(delta)
    largest = float(np.max(np.abs(delta[finite]))) if finite.any() else 0.0
    loss = 4.0 * largest + 1.0  # (loss + d) / 2 > largest for every finite d
    return np.where(finite, delta, np.sign(delta) * loss), largest


def _restore(value: float, largest: float) -> float:
    return float(np.sign(value) * np.inf) if abs(value) > largest else float(value)


def paired_difference(a, b, level: float = 0.95) -> Difference:
    r"""Paired difference ``a - b`` of per-trial RMSEs ``(n,)`` (NaN or inf: diverged): the
    Hodges–Lehmann estimate, the Wilcoxon signed-rank interval and p-value (module
    docstring). A trial where only ``a`` diverged is ``+inf``, only ``b`` ``-inf``, both 0."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-d arrays of one shape, got {a.shape} "
                         f"and {b.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    lost_a, lost_b = ~np.isfinite(a), ~np.isfinite(b)
    delta = np.where(lost_a & lost_b, 0.0,
                     np.where(lost_a, np.inf, np.where(lost_b, -np.inf, a - b)))
    n = delta.size
    one_diverged = int(np.sum(lost_a ^ lost_b))
    if n == 0:
        return Difference(float("nan"), float("nan"), float("nan"), 0, float("nan"), 0, level)
    if n == 1:
        return Difference(float(delta[0]), -np.inf, np.inf, 1, float("nan"), one_diverged, level)
    if np.all(delta == 0.0):  # the same numbers (or both diverged) in every trial
        return Difference(0.0, 0.0, 0.0, n, 1.0, one_diverged, level)
    substituted, largest = _with_losses(delta)
    i, j = np.triu_indices(n)
    walsh = np.sort((substituted[i] + substituted[j]) / 2.0)
    estimate = _restore(float(np.median(walsh)), largest)
    k = _order_index(n, level)
    if k is None:
        low, high = -np.inf, np.inf
    else:
        low, high = _restore(walsh[k - 1], largest), _restore(walsh[walsh.size - k], largest)
    p = float(_stats.wilcoxon(substituted).pvalue)  # exact for n <= 50, no ties/zeros
    return Difference(estimate, float(low), float(high), n, p, one_diverged, level)


def mean_interval(values, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Mean of the finite ``values`` with its percentile bootstrap interval
    (:data:`N_RESAMPLES` resamples, ``seed``): ``(mean, low, high)``; NaNs for none."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (float("nan"),) * 3
    if x.size == 1:
        return float(x[0]), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, (N_RESAMPLES, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(x.mean()), float(low), float(high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    r"""Holm's step-down adjusted p-values: with the :math:`m` p-values sorted,
    :math:`\tilde p_{(i)} = \max_{j \le i} \min(1, (m - j + 1)\, p_{(j)})`; a verdict holds at
    family-wise level :math:`\alpha` where :math:`\tilde p \le \alpha`. NaN p-values (no test)
    stay NaN and do not count in :math:`m`."""
    p = np.asarray(p_values, float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be 1-d, got shape {p.shape}")
    out = np.full(p.shape, np.nan)
    tested = np.nonzero(np.isfinite(p))[0]
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    adjusted = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(adjusted)
    return out


class Family:
    """A chapter's verdicts, corrected together by :func:`holm`.

    ``add(name, difference)`` registers one paired comparison (a :class:`Difference`, as
    :meth:`scoreda.experiments.compare.Comparison.difference` returns); :meth:`holds` says
    which survive at family-wise level ``alpha``; :meth:`table` is the Markdown table a
    chapter shows under its verdicts. Names must be unique.
    """

    def __init__(self, alpha: float = 0.05):
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
        self.alpha = alpha
        self.differences: dict = {}

    def add(self, name: str, difference: Difference) -> Difference:
        if not isinstance(difference, Difference):
            raise ValueError(f"{name}: expected a statistics.Difference, got "
                             f"{type(difference).__name__}")
        if name in self.differences:
            raise ValueError(f"verdict {name!r} is already in the family")
        self.differences[name] = difference
        return difference

    def adjusted(self) -> dict:
        """name -> Holm-adjusted p-value (NaN where no test was possible)."""
        names = list(self.differences)
        return dict(zip(names, holm([self.differences[k].p for k in names])))

    def holds(self) -> dict:
        """name -> ``"better"`` / ``"worse"`` (the first of the pair against the second) where
        the Holm-adjusted p-value is at most ``alpha``, else ``"not significant"``."""
        out = {}
        for name, p in self.adjusted().items():
            d = self.differences[name]
            out[name] = ("not significant" if not p <= self.alpha
                         else ("better" if d.estimate < 0 else "worse"))
        return out

    def smallest_p(self) -> float:
        """The smallest two-sided p-value the signed-rank test can give with the family's
        fewest pairs, :math:`2/2^n`: below ``alpha / m`` no verdict can survive Holm."""
        n = min((d.n for d in self.differences.values()), default=0)
        return float(min(1.0, 2.0 / 2.0**n)) if n else float("nan")

    def table(self, digits: int = 3) -> str:
        """Markdown: each verdict's estimate and interval, its p-value, the Holm-adjusted
        p-value and what holds at family-wise level ``alpha``."""
        adjusted, holds = self.adjusted(), self.holds()
        lines = ["| verdict | difference [95% CI] | p | Holm p | at family-wise "
                 f"{self.alpha:g} |", "|---|---|---|---|---|"]
        fmt = lambda v: (f"{v:+.{digits}f}" if np.isfinite(v) else
                         ("—" if np.isnan(v) else ("+∞" if v > 0 else "−∞")))
        for name, d in self.differences.items():
            p, q = d.p, adjusted[name]
            lines.append(f"| {name} | {fmt(d.estimate)} [{fmt(d.low)}, {fmt(d.high)}] | "
                         f"{'—' if np.isnan(p) else f'{p:.3g}'} | "
                         f"{'—' if np.isnan(q) else f'{q:.3g}'} | {holds[name]} |")
        m = int(np.sum(np.isfinite([d.p for d in self.differences.values()])))
        floor = self.smallest_p()
        note = (f"\n\n{m} verdicts corrected together (Holm). With {min(d.n for d in self.differences.values())} "
                f"paired trials the smallest possible p-value is {floor:.2g}"
                + (f", above {self.alpha:g}/{m} = {self.alpha / m:.2g}: no verdict of this family "
                   "can hold after correction with so few trials." if m and floor > self.alpha / m
                   else ".")) if self.differences else ""
        return "\n".join(lines) + note
