"""The statistics behind `harness decisions`, each against a known answer: a hand computation,
scipy, a published value or a simulation."""

import functools
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from harness.decision_stats import (RunBootstrap, TieRule, binomial_detectable, binomial_needed, binomial_power,
                                    mcnemar_detectable, mcnemar_exact, mcnemar_needed, mcnemar_power, newcombe_paired,
                                    paired_t_needed, paired_t_power, wilson)


# ---------------------------------------------------------------- exact tests and score intervals
def test_exact_mcnemar_is_the_binomial_test_of_the_discordant_pairs():
    assert mcnemar_exact(0, 1) == 1.0  # one discordant pair tells nothing
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 * 0.5 ** 6)  # by hand: 0.03125
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)  # five one-way pairs are not enough at 5%
    # by hand: 2 (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 134 / 2048
    assert mcnemar_exact(2, 9) == pytest.approx(134 / 2048)
    for b, c in ((3, 10), (12, 4), (7, 7)):
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)


def test_wilson_interval_matches_the_textbook_value():
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert all(math.isnan(v) for v in wilson(0, 0))  # no decisions, no interval
    # effective counts: half the decisions, a wider interval around the same proportion
    assert wilson(4, 5)[0] < low and wilson(4, 5)[1] > high


def test_newcombe_paired_interval_matches_published_values():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables" (2017), ch. 8:
    # Cavo et al. (2012), the R package contingencytables' test: -0.0621 (-0.1186 to -0.0046)
    theta, low, high = newcombe_paired(59, 6, 16, 80)
    assert (round(theta, 4), round(low, 4), round(high, 4)) == (-0.0621, -0.1186, -0.0046)
    # Bentur et al. (2009), the same book's other example: -0.2857 (-0.5069 to -0.0256)
    theta, low, high = newcombe_paired(1, 1, 7, 12)
    assert (round(theta, 4), round(low, 4), round(high, 4)) == (-0.2857, -0.5069, -0.0256)


def test_newcombe_interval_is_not_bounded_at_zero_by_one_discordant_pair():
    """The published bootstrap interval of CKA minus accuracy-greedy, [-10.0, +0.0], could not
    pass 0: every resample of decisions has at most the one discordant pair against CKA."""
    theta, low, high = newcombe_paired(28, 0, 1, 1)
    assert theta == pytest.approx(-1 / 30) and low < -0.15 and high > 0.05
    theta, low, high = newcombe_paired(10, 0, 0, 0)  # no discordant pair: symmetric about 0
    assert theta == 0 and low == pytest.approx(-high) and high > 0.2


# ---------------------------------------------------------------- the tie rule
def test_tie_rule_states_both_error_sources():
    rule = TieRule()
    # no seed spread: only the evaluation images' binomial error; by hand at p = 0.90 and 0.91
    # on 2,000 images: 100 sqrt(0.9 * 0.1 / 2000 + 0.91 * 0.09 / 2000) = 0.9271 points
    v = rule.verdict([[90.0, 90.0], [91.0, 91.0]], 2000)
    assert v["se_seeds"] == 0 and v["se_images"] == pytest.approx(0.92709, abs=1e-4)
    assert v["best"] is None  # a 1-point gap is within 1.96 x 0.93 points
    assert rule.verdict([[90.0, 90.0], [91.0, 91.0]], 100_000)["best"] == 1  # 0.13 points: resolved
    assert rule.verdict([[90.0, 90.0], [91.0, 91.0]], None)["best"] == 1  # size unknown: seeds only
    assert rule.verdict([[90.0, 90.0], [90.0, 90.0]], None)["best"] is None  # no gap at all


def test_tie_rule_pools_the_seed_spreads_rather_than_taking_the_larger():
    # variances over seeds: 0.32 and 0; over two seeds each: 0.16 + 0 -> 0.4 points. Taking the
    # larger spread for both candidates would give sqrt(0.32) = 0.57 and a tie at 1.96 x 0.57 > 1.1
    v = TieRule().verdict([[90.0, 90.8], [91.5, 91.5]], None)
    assert v["se_seeds"] == pytest.approx(0.4) and v["gap"] == pytest.approx(1.1) and v["best"] == 1
    # the gap and the standard errors are those of the two best candidates
    v = TieRule().verdict([[50.0, 60.0], [91.5, 91.5], [90.0, 90.8]], None)
    assert v["best"] == 1 and v["se_seeds"] == pytest.approx(0.4)


# ---------------------------------------------------------------- clustering by run
def test_run_clustered_bootstrap_resamples_whole_runs():
    w = RunBootstrap(["a", "a", "b", "b", "b"], samples=500).weights
    assert w.shape == (500, 5)
    assert np.all(w[:, 0] == w[:, 1]) and np.all(w[:, 2] == w[:, 4])  # a run comes whole or not at all
    assert np.all(w[:, 0] + w[:, 2] == 2)  # two runs drawn each time
    assert np.array_equal(w, RunBootstrap(["a", "a", "b", "b", "b"], samples=500).weights)  # seeded


def test_design_effect_is_the_run_size_when_runs_repeat_one_value_and_one_when_independent():
    rng = np.random.default_rng(1)
    runs, size = 60, 8
    boot = RunBootstrap(np.repeat(np.arange(runs), size).tolist())
    mask = np.ones(runs * size, dtype=bool)
    constant = np.repeat(rng.normal(size=runs), size)  # every decision of a run alike
    assert boot.design_effect(constant, mask) == pytest.approx(size, rel=0.2)
    assert boot.design_effect(rng.normal(size=runs * size), mask) == pytest.approx(1.0, abs=0.25)
    assert boot.design_effect(np.zeros(runs * size), mask) == 1.0  # no spread: no inflation
    one_run = np.zeros(runs * size, dtype=bool)
    one_run[:size] = True
    assert boot.design_effect(rng.normal(size=runs * size), one_run) == 1.0  # one run: nothing to resample


def test_clustered_intervals_cover_the_truth_where_the_independent_ones_do_not():
    """Agreement over runs that differ (a beta-binomial with intra-run correlation 0.3): the
    Wilson interval on the effective number of decisions covers the true 80% about 95% of the
    time; the one that treats the decisions as independent falls well short."""
    rng = np.random.default_rng(7)
    runs, size, truth, icc = 30, 8, 0.8, 0.3
    boot = RunBootstrap(np.repeat(np.arange(runs), size).tolist(), samples=1000)
    mask = np.ones(runs * size, dtype=bool)
    alpha, beta = truth * (1 / icc - 1), (1 - truth) * (1 / icc - 1)
    covered = naive = 0
    trials = 200
    for _ in range(trials):
        p = rng.beta(alpha, beta, size=runs)
        outcome = (rng.random((runs, size)) < p[:, None]).astype(float).ravel()
        k, n = outcome.sum(), len(outcome)
        deff = boot.design_effect(outcome, mask)
        low, high = wilson(k / deff, n / deff)
        covered += low <= truth <= high
        low, high = wilson(k, n)
        naive += low <= truth <= high
    assert covered / trials >= 0.9
    assert naive / trials < 0.85


def test_mean_interval_carries_the_design_effect():
    boot = RunBootstrap(np.repeat(np.arange(10), 5).tolist())
    values = np.repeat(np.arange(10, dtype=float), 5)
    m, low, high, se = boot.mean_interval(values, np.ones(50, dtype=bool))
    assert m == pytest.approx(4.5)
    # the mean of 10 run means: SE close to sd(run means) / sqrt(10), not sd(values) / sqrt(50)
    assert se == pytest.approx(np.std(np.arange(10), ddof=1) / math.sqrt(10), rel=0.1)
    assert low == pytest.approx(m - 1.959964 * se) and high == pytest.approx(m + 1.959964 * se)


# ---------------------------------------------------------------- power
def test_mcnemar_power_matches_a_brute_force_simulation():
    rng = np.random.default_rng(3)
    n, discordance, difference, trials = 60, 0.3, 0.2, 4000
    only_first, only_second = (discordance + difference) / 2, (discordance - difference) / 2
    counts = rng.multinomial(n, [only_first, only_second, 1 - discordance], size=trials)
    pvalue = functools.cache(lambda b, c: binomtest(b, b + c, 0.5).pvalue)
    rejected = sum(pvalue(int(b), int(c)) <= 0.05 for b, c, _ in counts if b + c)
    simulated = rejected / trials
    assert mcnemar_power(n, discordance, difference) == pytest.approx(simulated, abs=3 * math.sqrt(0.25 / trials))


def connor_needed(difference: float, discordance: float) -> float:
    """Connor (1987, Biometrics 43:207): the normal approximation of the McNemar sample size."""
    za, zb = 1.959964, 0.841621
    return (za * math.sqrt(discordance) + zb * math.sqrt(discordance - difference ** 2)) ** 2 / difference ** 2


def test_mcnemar_power_and_sample_size_agree_with_connor_for_large_samples():
    # Connor (1987): the normal approximation; the exact test, conservative, needs a few percent more
    for difference, discordance in ((0.03, 0.1), (0.05, 0.2), (0.1, 0.3)):
        exact = mcnemar_needed(difference, discordance)
        assert 1.0 <= exact / connor_needed(difference, discordance) < 1.08
        assert mcnemar_power(exact, discordance, difference) >= 0.8
        assert mcnemar_power(int(exact * 0.8), discordance, difference) < 0.8


def test_detectable_difference_of_the_old_48_decisions():
    """Issue 23's figures: 30-34 resolved decisions with little discordance detect only
    23-26 points; 3 points needs about 260-810 such decisions."""
    assert 100 * mcnemar_detectable(30, 1 / 30) == pytest.approx(25, abs=1)
    assert 100 * mcnemar_detectable(34, 3 / 34) == pytest.approx(22.5, abs=1)
    assert mcnemar_needed(0.03, 0.03) == pytest.approx(263, abs=5)
    assert mcnemar_needed(0.03, 3 / 34) == pytest.approx(810, rel=0.03)
    # five decisions can never reject at 5%, however they fall (2 x 0.5^5 = 0.0625)
    assert mcnemar_detectable(5, 1.0) is None


def test_binomial_power_uses_scipys_rejection_set():
    n, p0, difference = 40, 0.5, 0.2
    reject = [k for k in range(n + 1) if binomtest(k, n, p0).pvalue <= 0.05]
    from scipy.stats import binom

    assert binomial_power(n, p0, difference) == pytest.approx(sum(binom.pmf(k, n, p0 + difference) for k in reject))
    # against a chance level that is not one half, too
    reject = [k for k in range(n + 1) if binomtest(k, n, 1 / 3).pvalue <= 0.05]
    assert binomial_power(n, 1 / 3, 0.25) == pytest.approx(sum(binom.pmf(k, n, 1 / 3 + 0.25) for k in reject))
    detect = binomial_detectable(n, p0)
    assert binomial_power(n, p0, detect) >= 0.8 > binomial_power(n, p0, detect - 0.01)
    needed = binomial_needed(0.1, 0.5)
    assert binomial_power(needed, 0.5, 0.1) >= 0.8 and 150 < needed < 250  # normal approximation: 194


def test_paired_t_sample_size_matches_the_published_tables():
    # G*Power / Cohen (1988), one-sample (paired) t, two-sided 5%, 80% power: d = 1 needs 10
    # pairs (power 0.803), d = 0.5 needs 34 (power 0.808)
    assert paired_t_needed(1.0, 1.0) == 10 and paired_t_power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=1e-3)
    assert paired_t_needed(0.5, 1.0) == 34 and paired_t_power(34, 0.5, 1.0) == pytest.approx(0.8078, abs=1e-3)
    assert paired_t_needed(5.0, 7.41) == 20  # Table III on ResNet-32: CKA vs random walk's spread
