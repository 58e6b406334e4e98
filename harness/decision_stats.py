"""The statistics behind ``harness decisions``: the oracle's tie rule, exact McNemar tests,
paired score intervals, intervals that respect clustering by run, and the power of the exact
McNemar test (the smallest difference a set of decisions can detect).

Everything here is deterministic (the bootstrap draws from a fixed seed), so the pages built
from it can be rebuilt byte for byte.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from statistics import NormalDist

Z95 = NormalDist().inv_cdf(0.975)  # two-sided 5%
Z80 = NormalDist().inv_cdf(0.80)  # 80% power
BOOTSTRAP_SAMPLES = 4000
ALPHA = 0.05
POWER = 0.80


# ---------------------------------------------------------------- the oracle's tie rule
@dataclass(frozen=True)
class TieRule:
    """When the oracle cannot tell its two best candidates apart.

    The gap between the two best candidates' mean accuracies (points) is a **tie** when it is
    below ``z`` standard errors of that gap, the standard error combining both sources of error:

    - **seeds**: each candidate's sample variance over its seeds divided by its number of seeds
      (with two seeds, (a1 - a2)^2 / 4), summed over the two candidates. This pools the two
      candidates' spreads (a mean of variances), not the larger one: the maximum of two
      one-degree-of-freedom spreads is biased upwards and charges one candidate's noise to both;
    - **evaluation images**: the binomial variance of an accuracy p measured on n images,
      p (1 - p) / n, summed over the two candidates. Both are scored on the same images, so the
      error of their *difference* is smaller than this sum by the covariance of their per-image
      outcomes. Records made before the oracle read the test split hold no per-image outcomes,
      so there this is an upper bound and the rule errs towards calling ties; newer ones
      record the paired standard error (``paired_se``).

    ``z`` = 1.96 calls the oracle's answer only when its gap is significant at 5% (two-sided).
    """

    z: float = Z95

    def verdict(self, accuracies: list[list[float]], images: int | None, paired_se: float | None = None) -> dict:
        """The oracle's answer from each candidate's accuracies in % (one per seed) measured on
        ``images`` images (None: unknown, no binomial term): ``best`` (None for a tie), the
        ``means``, the ``gap`` and its standard errors (points). ``paired_se``: the evaluation
        images' standard error of the gap from per-image outcomes (runs record it since the
        oracle reads the test split), which replaces the unpaired bound."""
        means = [statistics.fmean(a) for a in accuracies]
        order = sorted(range(len(means)), key=lambda i: -means[i])  # stable: equal means keep their order
        if len(means) < 2:
            return {"means": means, "best": order[0] if means else None, "gap": math.inf, "se": 0.0,
                    "se_seeds": 0.0, "se_images": 0.0}
        top = order[:2]
        gap = means[top[0]] - means[top[1]]
        se_seeds = math.sqrt(sum(statistics.variance(accuracies[i]) / len(accuracies[i])
                                 for i in top if len(accuracies[i]) > 1))
        se_images = paired_se if paired_se is not None else 0.0 if not images else 100 * math.sqrt(
            sum((means[i] / 100) * (1 - means[i] / 100) / images for i in top))
        se = math.hypot(se_seeds, se_images)
        tie = gap == 0 or gap < self.z * se
        return {"means": means, "best": None if tie else order[0], "gap": gap, "se": se,
                "se_seeds": se_seeds, "se_images": se_images}


# ---------------------------------------------------------------- proportions and their intervals
def wilson(k: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion k/n (k and n may be effective, non-integer counts)."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe_paired(a: float, b: float, c: float, d: float, z: float = Z95) -> tuple[float, float, float]:
    """Difference of two paired proportions, (a + b)/n - (a + c)/n, with Newcombe's hybrid
    score interval (Newcombe 1998, Stat Med 17:2635, method 10): a = both right, b = only the
    first right, c = only the second right, d = both wrong. Unlike a percentile bootstrap over
    decisions, it does not stop at 0 when every discordant pair goes one way."""
    n = a + b + c + d
    if n <= 0:
        return math.nan, math.nan, math.nan
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, z)
    l2, u2 = wilson(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    # Newcombe's correlation term: a positive cross-product is shrunk by n/2 (and at most to 0)
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins > 0 else 0.0
    theta = p1 - p2
    low = theta - math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    high = theta + math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return theta, max(-1.0, low), min(1.0, high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of b discordant pairs out of b + c
    against one half (1.0 without discordant pairs)."""
    from scipy.stats import binomtest

    return 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)


def binomial_exact(k: int, n: int, p: float) -> float:
    """Two-sided exact binomial p-value of k successes in n against probability p."""
    from scipy.stats import binomtest

    return 1.0 if n == 0 else float(binomtest(k, n, p).pvalue)


# ---------------------------------------------------------------- clustering by run
class RunBootstrap:
    """A run-clustered bootstrap, drawn once (seeded) for a set of items and shared by every
    statistic of them, so paired statistics see the same resamples: ``weights[s, i]`` is how
    often item i is drawn in resample s when whole runs are resampled with replacement."""

    def __init__(self, runs: list, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
        import numpy as np

        labels = sorted(set(runs), key=str)
        self.runs = np.array([labels.index(r) for r in runs])
        counts = np.random.default_rng(seed).multinomial(len(labels), [1 / len(labels)] * len(labels), size=samples)
        self.weights = counts[:, self.runs].astype(float)

    def design_effect(self, values, mask) -> float:
        """How much clustering inflates the variance of the mean of ``values`` over ``mask``:
        the bootstrap variance (scaled by G/(G-1) for the G runs the mask covers, as few runs
        understate it) over the variance were the items independent; at least 1 (1 when either
        variance is 0)."""
        import numpy as np

        v = np.asarray(values, dtype=float)[mask]
        runs = len(set(self.runs[mask].tolist()))
        if len(v) < 2 or runs < 2:
            return 1.0
        w = self.weights[:, mask]
        total = w.sum(axis=1)
        keep = total > 0
        clustered = float(np.var((w[keep] @ v) / total[keep])) * runs / (runs - 1)
        independent = float(np.var(v, ddof=1)) / len(v)
        if independent <= 0 or clustered <= 0:
            return 1.0
        return max(1.0, clustered / independent)

    def mean_interval(self, values, mask, z: float = Z95) -> tuple[float, float, float, float]:
        """Mean of ``values`` over ``mask`` with a normal interval whose standard error carries
        the design effect; also returns that standard error."""
        import numpy as np

        v = np.asarray(values, dtype=float)[mask]
        if len(v) == 0:
            return math.nan, math.nan, math.nan, math.nan
        m = float(v.mean())
        if len(v) < 2:
            return m, math.nan, math.nan, math.nan
        se = math.sqrt(float(np.var(v, ddof=1)) / len(v) * self.design_effect(values, mask))
        return m, m - z * se, m + z * se, se


# ---------------------------------------------------------------- power of the exact tests
def _mcnemar_rejects(discordant, alpha: float):
    """For each number of discordant pairs D, the largest count k on one side that the exact
    two-sided McNemar test rejects (2 P(X <= k) <= alpha, X ~ Bin(D, 1/2)); -1 when none."""
    import numpy as np
    from scipy.stats import binom

    d = np.asarray(discordant)
    k = binom.ppf(alpha / 2, d, 0.5)
    k = np.where(binom.cdf(k, d, 0.5) <= alpha / 2 * (1 + 1e-9), k, k - 1)
    return k.astype(int)


def mcnemar_power(n: int, discordance: float, difference: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact McNemar test on ``n`` paired decisions when a fraction
    ``discordance`` of them is discordant and the two selectors' agreement differs by
    ``difference`` (both fractions; the difference cannot exceed the discordance)."""
    import numpy as np
    from scipy.stats import binom

    if n <= 0 or discordance <= 0:
        return 0.0
    difference = min(difference, discordance)
    # the numbers of discordant pairs with any probability worth counting (beyond 9 standard
    # deviations the mass is below 1e-18): large n costs no more than small n
    spread = 9 * math.sqrt(n * discordance * (1 - discordance)) + 1
    d = np.arange(max(0, math.floor(n * discordance - spread)), min(n, math.ceil(n * discordance + spread)) + 1)
    k = _mcnemar_rejects(d, alpha)
    share = (discordance + difference) / (2 * discordance)  # P(a discordant pair favours the first)
    reject = binom.cdf(k, d, share) + binom.sf(d - k - 1, d, share)
    return float(np.sum(binom.pmf(d, n, discordance) * reject))


def binomial_power(n: int, p0: float, difference: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact binomial test of k/n against p0 when the truth is
    p0 + difference (the rejection set as scipy's binomtest draws it)."""
    import numpy as np
    from scipy.stats import binom

    if n <= 0:
        return 0.0
    k = np.arange(n + 1)
    null = binom.pmf(k, n, p0)
    ordered = np.sort(null)
    cumulative = np.cumsum(ordered)
    # p-value of k: the null probability of every outcome no more likely than k
    pvalue = cumulative[np.searchsorted(ordered, null * (1 + 1e-7), side="right") - 1]
    reject = np.minimum(pvalue, 1.0) <= alpha
    return float(binom.pmf(k, n, min(1.0, p0 + difference))[reject].sum())


def _smallest(power, low: float, high: float, target: float = POWER) -> float | None:
    """The smallest x in (low, high] with power(x) >= target (power rising in x), to 1e-4."""
    if power(high) < target:
        return None
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (low, mid) if power(mid) >= target else (mid, high)
        if high - low < 1e-4:
            break
    return high


def mcnemar_detectable(n: int, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest agreement difference (fraction) the exact McNemar test detects with the
    given power on ``n`` paired decisions, taking the discordance as observed or, where the
    difference is larger, as the difference itself (a difference needs that many discordant
    pairs); None when no difference up to 1 is detectable."""
    return _smallest(lambda x: mcnemar_power(n, max(discordance, x), x, alpha), 0.0, 1.0, power)


def binomial_detectable(n: int, p0: float, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """The smallest difference above p0 the exact binomial test detects with the given power."""
    return _smallest(lambda x: binomial_power(n, p0, x, alpha), 0.0, 1.0 - p0, power)


def _first_n(reaches, limit: int) -> int | None:
    """The first n found by doubling then bisection with ``reaches(n)`` true; None past ``limit``.
    Exact tests' power saws up and down with n, so this is about, not exactly, the smallest."""
    low, high = 1, 2
    while not reaches(high):
        if high > limit:
            return None
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def mcnemar_needed(difference: float, discordance: float, alpha: float = ALPHA, power: float = POWER,
                   limit: int = 1_000_000) -> int | None:
    """About how many paired decisions the exact McNemar test needs to detect ``difference``
    with the given power (the discordance as observed, at least the difference)."""
    psi = max(discordance, difference)
    return _first_n(lambda n: mcnemar_power(n, psi, difference, alpha) >= power, limit)


def binomial_needed(difference: float, p0: float, alpha: float = ALPHA, power: float = POWER,
                    limit: int = 100_000) -> int | None:
    """About how many decisions the exact binomial test needs to detect p0 + ``difference``."""
    if p0 + difference > 1:
        return None
    return _first_n(lambda n: binomial_power(n, p0, difference, alpha) >= power, limit)


def paired_t_power(n: int, difference: float, sd: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test on ``n`` pairs whose differences have standard
    deviation ``sd``, when their mean is ``difference`` (the noncentral t distribution)."""
    from scipy.stats import nct, t

    if n < 2 or sd <= 0:
        return 0.0
    critical = t.ppf(1 - alpha / 2, n - 1)
    shift = difference / (sd / math.sqrt(n))
    return float(nct.sf(critical, n - 1, shift) + nct.cdf(-critical, n - 1, shift))


def paired_t_needed(difference: float, sd: float, alpha: float = ALPHA, power: float = POWER,
                    limit: int = 100_000) -> int | None:
    """How many pairs (seeds) the paired t-test needs to detect ``difference`` with the given power."""
    if sd <= 0:
        return 2
    return _first_n(lambda n: paired_t_power(n, difference, sd, alpha) >= power, limit)


def normal_detectable(se: float, z: float = Z95, z_power: float = Z80) -> float:
    """The smallest difference a two-sided normal test detects at 80% power: (1.96 + 0.84) SE."""
    return (z + z_power) * se
