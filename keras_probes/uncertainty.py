"""Intervals and paired tests of probe figures, from each example's outcome.

A probe's figure on a split is a mean over its examples (its error: of
mistakes; its loss: of cross-entropies), so its uncertainty is that of a
mean over the examples drawn. Examples are the unit of resampling, or, for
per-token probes, whole sequences (`units`): tokens of one sequence are not
independent, and treating them as such gives intervals too narrow.

- `rate_interval`: an error rate's Wilson score interval (scipy's
  `binomtest(...).proportion_ci(method="wilson")`); with sequences, the same
  interval at the effective sample size (Kish's design effect, from the
  between-sequence variance of the ratio estimate).
- `mean_interval`: a loss's percentile bootstrap over examples (or sequences);
  `statistic_interval` the same for a function of several means (an R^2).
- `paired_rates`: two error rates on the same examples. McNemar's exact test
  (a binomial test on the discordant pairs) with the Agresti-Min interval of
  the difference; with sequences, a cluster-robust z test and interval
  (Obuchowski's clustered McNemar).
- `paired_means`: two losses (or R^2s, given their `statistic`) on the same
  examples: the paired bootstrap.
- `kendall_interval`: the monotonicity with depth (minus Kendall's tau-b of
  the figure against depth) with its bootstrap interval.
- `holm`: Holm's step-down adjustment of p-values tested together.

Every bootstrap is seeded (`seed=0`, 2000 resamples by default): the same
outcomes give the same interval, in any process, after any round trip.

Example:

```python
low, high = kp.uncertainty.rate_interval(~outcomes.correct)
c = kp.uncertainty.paired_rates(errors_a, errors_b)
c.difference, c.low, c.high, c.pvalue
```
"""

import dataclasses
import math

import numpy as np
from scipy import special, stats

__all__ = [
    "Comparison",
    "RESAMPLES",
    "holm",
    "kendall_interval",
    "mean_interval",
    "paired_means",
    "paired_rates",
    "rate_interval",
    "statistic_interval",
]

#: Bootstrap resamples of every interval and test that resamples.
RESAMPLES = 2000
# Resampled means per NumPy call: bounds the (batch, units) count matrix to ~32 MiB.
_COUNTS_PER_CALL = 1 << 22


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A paired comparison of two figures on the same examples, as SciPy reports tests.

    Attributes:
        difference: the first figure minus the second.
        low, high: the interval of the difference at `level`.
        pvalue: the two-sided p-value of "no difference" (of the test alone;
            see `adjusted_pvalue`).
        level: the confidence level of `low` and `high`.
        test: which test and interval, e.g. `"McNemar exact"`.
        a, b: what was compared (point names; `b` names the other report's
            point for a control), and on which `split` and `metric`.
        adjusted_pvalue: Holm's adjusted p-value when the comparison was one
            of several tested together (`ProbeReport.compare_adjacent`), else
            `None`.
    """

    difference: float
    low: float
    high: float
    pvalue: float
    level: float
    test: str
    a: str = ""
    b: str = ""
    split: str = ""
    metric: str = ""
    adjusted_pvalue: float | None = None

    def significant(self, alpha: float | None = None) -> bool:
        """Whether the difference is significant at `alpha` (default `1 - level`),
        after Holm's adjustment when there is one."""
        alpha = 1 - self.level if alpha is None else alpha
        p = self.pvalue if self.adjusted_pvalue is None else self.adjusted_pvalue
        return bool(p < alpha)

    def __str__(self):
        p = self.pvalue if self.adjusted_pvalue is None else self.adjusted_pvalue
        adjusted = " (Holm)" if self.adjusted_pvalue is not None else ""
        return (
            f"{self.metric} {self.a} - {self.b}: {self.difference:+.4f} "
            f"[{self.low:+.4f}, {self.high:+.4f}] ({self.level:.0%}), "
            f"p={p:.3g}{adjusted}, {self.test}"
        )


def rate_interval(values, units=None, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a rate: the mean of 0/1 `values`.

    Args:
        values: `(n,)` zeros and ones (e.g. each example's mistake).
        units: `(n,)` the sequence of each value, or `None` when every value
            is an independent example. With sequences the interval is
            Wilson's at the effective number of examples, `p (1 - p) /
            variance`, the variance estimated between sequences.
        level: the confidence level. Defaults to `0.95`.

    Returns:
        `(low, high)`.
    """
    values = _checked(values)
    n, p = len(values), float(values.mean())
    if units is None:
        effective = n
    else:
        sums, sizes = _unit_sums(values[:, None], units)
        variance = _ratio_variance(sums[:, 0], sizes)
        # No variation between sequences (all right or all wrong): count sequences.
        effective = p * (1 - p) / variance if variance > 0 else len(sizes)
        effective = min(effective, n)
    return _wilson(p, effective, level)


def mean_interval(
    values, units=None, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of a mean (e.g. a probe's loss).

    Args:
        values: `(n,)` each example's value, or `(n, k)` for `k` means at
            once (each column a probe), resampled together.
        units: `(n,)` each value's sequence, resampled whole, or `None`.
        level: the confidence level. Defaults to `0.95`.
        resamples: bootstrap resamples. Defaults to `RESAMPLES`.
        seed: the resampling's seed. Defaults to `0`.

    Returns:
        `(low, high)`, or a list of them, one per column.
    """
    values = np.asarray(values, np.float64)
    columns = _checked(values if values.ndim == 2 else values[:, None], ndim=2)
    means = _resampled_means(columns, units, resamples, seed)
    intervals = [_percentiles(means[:, k], level) for k in range(means.shape[1])]
    return intervals if values.ndim == 2 else intervals[0]


def statistic_interval(
    values,
    statistic,
    units=None,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of a function of means, e.g. an R^2.

    Args:
        values: `(n, k)` each example's values of `k` columns; or `(n, p, k)`
            for `p` figures at once (e.g. probes), resampled together.
        statistic: the figure from the columns' means: `(..., k) -> (...)`
            (`kp.outcomes` gives it with the columns).
        units, level, resamples, seed: as in `mean_interval`.

    Returns:
        `(low, high)`, or a list of them, one per figure.
    """
    values = np.asarray(values, np.float64)
    grouped = _checked(values if values.ndim == 3 else values[:, None, :], ndim=3)
    n, p, k = grouped.shape
    means = _resampled_means(grouped.reshape(n, p * k), units, resamples, seed)
    figures = statistic(means.reshape(-1, p, k))
    intervals = [_percentiles(_finite(figures[:, i]), level) for i in range(p)]
    return intervals if values.ndim == 3 else intervals[0]


def paired_rates(a, b, units=None, level: float = 0.95) -> Comparison:
    """Two rates on the same examples: the difference `mean(a) - mean(b)`, tested.

    Without sequences, McNemar's exact test (a two-sided binomial test of the
    discordant pairs, `scipy.stats.binomtest`) and the Agresti-Min interval
    (a Wald interval with half an example added to each cell of the 2x2
    table). With sequences, a z test and interval with the cluster-robust
    variance of the difference (Obuchowski, 1998); where every sequence
    differs by the same share (no spread to scale by), a sign test over the
    sequences.

    Args:
        a, b: `(n,)` zeros and ones, one per example, in the same order.
        units: `(n,)` each example's sequence, or `None`.
        level: the confidence level. Defaults to `0.95`.

    Returns:
        A `Comparison`.
    """
    a, b = _pair(a, b)
    n, difference = len(a), float(a.mean() - b.mean())
    if units is not None:
        return _clustered(a - b, units, difference, level)
    only_a, only_b = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    discordant = only_a + only_b
    pvalue = stats.binomtest(only_a, discordant, 0.5).pvalue if discordant else 1.0
    # Agresti & Min (2005): add 0.5 to each of the four cells.
    n2, a2, b2 = n + 2, only_a + 0.5, only_b + 0.5
    center = (a2 - b2) / n2
    se = math.sqrt(max(a2 + b2 - (a2 - b2) ** 2 / n2, 0.0)) / n2
    z = _z(level)
    low, high = max(center - z * se, -1.0), min(center + z * se, 1.0)
    return Comparison(difference, low, high, float(pvalue), level, "McNemar exact")


def paired_means(
    a,
    b,
    units=None,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
    statistic=None,
) -> Comparison:
    """Two means on the same examples (e.g. losses): the paired bootstrap.

    The examples (or sequences) are resampled together for both; the interval
    is the percentile interval of the resampled differences and the p-value
    its inversion: twice the share of resampled differences on the far side
    of zero.

    Args:
        a, b: `(n,)` each example's values, in the same order; or, with
            `statistic`, `(n, k)` columns of each.
        units: `(n,)` each example's sequence, or `None`.
        level: the confidence level. Defaults to `0.95`.
        resamples: bootstrap resamples. Defaults to `RESAMPLES`.
        seed: the resampling's seed. Defaults to `0`.
        statistic: the figure from the columns' means, `(..., k) -> (...)`
            (e.g. an R^2). Defaults to `None`: the mean.

    Returns:
        A `Comparison`.
    """
    if statistic is None:
        a, b = _pair(a, b)
        differences = _resampled_means((a - b)[:, None], units, resamples, seed)[:, 0]
        difference = float(a.mean() - b.mean())
    else:
        a, b = _checked(a, ndim=2), _checked(b, ndim=2)
        if a.shape != b.shape:
            raise ValueError(f"Paired columns must match. Received: {a.shape} and {b.shape}")
        k = a.shape[1]
        means = _resampled_means(np.concatenate([a, b], axis=1), units, resamples, seed)
        differences = _finite(statistic(means[:, :k]) - statistic(means[:, k:]))
        difference = float(statistic(a.mean(axis=0)) - statistic(b.mean(axis=0)))
    low, high = _percentiles(differences, level)
    below, above = np.sum(differences <= 0), np.sum(differences >= 0)
    pvalue = min(1.0, 2 * (min(below, above) + 1) / (len(differences) + 1))
    return Comparison(difference, low, high, pvalue, level, "paired bootstrap")


def kendall_interval(
    values,
    units=None,
    level: float = 0.95,
    resamples: int = RESAMPLES,
    seed: int = 0,
    statistic=None,
) -> tuple[float, float, float]:
    """How steadily a figure falls with depth, with its bootstrap interval.

    Args:
        values: `(n, points)` each example's value at each point, points in
            depth order; with `statistic`, `(n, points, k)` columns.
        units: `(n,)` each example's sequence, or `None`.
        level: the confidence level. Defaults to `0.95`.
        resamples: bootstrap resamples. Defaults to `RESAMPLES`.
        seed: the resampling's seed. Defaults to `0`.
        statistic: a point's figure from its columns' means, `(..., k) ->
            (...)`. Defaults to `None`: the mean.

    Returns:
        `(tau, low, high)`: minus Kendall's tau-b of the points' figures
        against depth, and its percentile interval over resampled examples.

    Where neighbouring points differ by more than their noise, the interval
    covers the true figures' tau at its level (measured in
    `tests/test_uncertainty.py`); where they are close, noise reorders them
    in the test set and in its resamples alike, the measured tau falls below
    a true tau of 1 and the interval undercovers (about 0.75 for 5 points
    0.014 apart on 500 examples, the same test). Whether neighbours differ
    is `ProbeReport.compare_adjacent`'s question, with its Holm-corrected
    tests.
    """
    values = np.asarray(values, np.float64)
    if statistic is None:
        values, statistic = values[..., None], _first
    values = _checked(values, ndim=3)
    n, points, k = values.shape
    figures = statistic(values.mean(axis=0))[None, :]
    resampled = _resampled_means(values.reshape(n, points * k), units, resamples, seed)
    tau = _minus_tau(figures)[0]
    taus = _minus_tau(statistic(resampled.reshape(-1, points, k)))
    low, high = _percentiles(_finite(taus), level)
    return float(tau), low, high


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (controls the family-wise error rate).

    The i-th smallest p-value is multiplied by `m - i` (from `i = 0`), made
    non-decreasing in that order and capped at 1; a hypothesis is rejected at
    `alpha` when its adjusted p-value is below `alpha`.
    """
    p = np.asarray(pvalues, np.float64)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    adjusted = np.empty_like(p)
    adjusted[order] = scaled
    return adjusted


def _checked(values, ndim=1):
    values = np.asarray(values, np.float64)
    if values.ndim != ndim or len(values) == 0:
        raise ValueError(
            f"Expected a non-empty array of {ndim} dimension(s). Received: shape {values.shape}"
        )
    return values


def _pair(a, b):
    a, b = _checked(a), _checked(b)
    if a.shape != b.shape:
        raise ValueError(
            f"Paired figures need one value per example on both sides. Received: {len(a)} "
            f"and {len(b)} values"
        )
    return a, b


def _z(level):
    return float(special.ndtri(0.5 + level / 2))


def _wilson(p, n, level):
    z = _z(level)
    denominator = 1 + z**2 / n
    center = (p + z**2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return max(0.0, center - half), min(1.0, center + half)


def _unit_sums(values, units):
    """Per-unit sums `(m, k)` of `values` `(n, k)`, and unit sizes `(m,)`."""
    _, index = np.unique(np.asarray(units), return_inverse=True)
    if len(index) != len(values):
        raise ValueError(
            f"`units` must give each of the {len(values)} values its sequence. Received: "
            f"{len(index)} units"
        )
    sums = np.zeros((index.max() + 1, values.shape[1]))
    np.add.at(sums, index, values)
    return sums, np.bincount(index).astype(np.float64)


def _ratio_variance(sums, sizes):
    """The cluster-robust variance of `sum(sums) / sum(sizes)`."""
    m = len(sizes)
    if m < 2:
        return math.inf
    ratio = sums.sum() / sizes.sum()
    return m / (m - 1) * np.sum((sums - ratio * sizes) ** 2) / sizes.sum() ** 2


def _clustered(differences, units, difference, level):
    sums, sizes = _unit_sums(differences[:, None], units)
    se = math.sqrt(_ratio_variance(sums[:, 0], sizes))
    if se == 0:
        # Every sequence differs by the same share (a token always wrong on one side):
        # no spread to scale a z by; the sign test over sequences says how sure.
        ahead, behind = int(np.sum(sums > 0)), int(np.sum(sums < 0))
        pvalue = stats.binomtest(ahead, ahead + behind, 0.5).pvalue if ahead + behind else 1.0
        return Comparison(difference, difference, difference, float(pvalue), level, "sign test")
    z = _z(level)
    pvalue = float(2 * special.ndtr(-abs(difference) / se))
    low, high = max(difference - z * se, -1.0), min(difference + z * se, 1.0)
    return Comparison(difference, low, high, pvalue, level, "clustered z")


def _resampled_means(values, units, resamples, seed):
    """`(resamples, k)` means of `values` `(n, k)` over examples (or whole units)
    drawn with replacement: each unit's count is multinomial."""
    if units is None:
        sums, sizes = values, np.ones(len(values))
    else:
        sums, sizes = _unit_sums(values, units)
    m = len(sizes)
    rng = np.random.default_rng(seed)
    batch = max(1, _COUNTS_PER_CALL // m)
    means = []
    for start in range(0, resamples, batch):
        rows = min(batch, resamples - start)
        # m draws with replacement per resample, counted per unit (one bincount for
        # all rows: 3x faster than numpy's multinomial at 50,000 units).
        drawn = rng.integers(0, m, (rows, m)) + m * np.arange(rows)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=rows * m).reshape(rows, m)
        means.append((counts @ sums) / (counts @ sizes)[:, None])
    return np.concatenate(means)


def _first(means):
    return means[..., 0]


def _finite(samples):
    """The resamples where the figure is defined (an R^2 of a resample whose targets
    are all equal is not)."""
    samples = np.asarray(samples)
    return samples[np.isfinite(samples)]


def _percentiles(samples, level):
    if len(samples) == 0:
        return math.nan, math.nan
    low, high = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _minus_tau(means):
    """Minus Kendall's tau-b of each row of `means` `(rows, points)` against depth (no
    ties in depth); NaN where a row's values are all equal."""
    points = means.shape[1]
    i, j = np.triu_indices(points, k=1)
    signs = np.sign(means[:, j] - means[:, i])
    pairs = len(i)
    untied = np.sum(signs != 0, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return -signs.sum(axis=1) / np.sqrt(pairs * untied)
